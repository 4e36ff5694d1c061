# The "examples" part of the single-user servers' configuration (loaded by
# jupyter_server_config.py beside it): on a server's first start, the example notebooks
# (examples/ beside this file) are copied to where the user's files live:
#
#   full JupyterLab                       $HOME/examples/          marker $HOME/.stackhub/examples.json
#   Remote Compute Kernels (s3contents)   s3://BUCKET/PREFIX/examples/  marker PREFIX/.stackhub/examples.json
#                                         (JUPYTER_GATEWAY_URL and STACKHUB_S3_BUCKET set, as in
#                                         stackhub_remote.py; credentials from the AWS_* chain)
#
# The unit is a top-level entry of examples/ (a notebook, the stac-fixture/ directory). The
# marker lists the entries already offered to this user: an offered entry is never copied again,
# so examples the user deleted stay deleted and edited ones are never replaced. An entry a later
# release adds is copied once, at the next start, if nothing of that name exists yet. Nothing
# existing is ever overwritten, marker or not.
#
# STACKHUB_EXAMPLES=0 (e.g. in a profile's environment) turns this off. A failure never stops the
# server: it is logged as a warning (no credentials in it) and the next start tries again.
import json
import logging
import os

EXAMPLES_DIR = "examples"
MARKER = ".stackhub/examples.json"
log = logging.getLogger("ServerApp")


def _source_dir():
    here = globals().get("__file__")
    if here:
        return os.path.join(os.path.dirname(os.path.abspath(here)), EXAMPLES_DIR)
    for d in os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep):
        if d and os.path.isdir(os.path.join(d, EXAMPLES_DIR)):
            return os.path.join(d, EXAMPLES_DIR)
    return ""


def _entries(source):
    """Top-level entry name -> [(relative path, absolute path)] of its files."""
    out = {}
    for name in sorted(os.listdir(source)):
        if name.startswith(".") or name == "__pycache__":
            continue
        top = os.path.join(source, name)
        files = []
        if os.path.isdir(top):
            for root, dirs, names in os.walk(top):
                dirs.sort()
                for n in sorted(names):
                    full = os.path.join(root, n)
                    files.append((os.path.relpath(full, source), full))
        else:
            files.append((name, top))
        out[name] = files
    return out


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _redact(text):
    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "JUPYTERHUB_API_TOKEN"):
        value = os.environ.get(key)
        if value and len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text


def _copy_to_home(entries, home):
    marker = os.path.join(home, MARKER)
    try:
        offered = set(json.loads(_read(marker))["offered"])
    except FileNotFoundError:
        offered = set()
    dest = os.path.join(home, EXAMPLES_DIR)
    copied = []
    for name, files in entries.items():
        if name in offered:
            continue
        if not os.path.lexists(os.path.join(dest, name)):
            for rel, src in files:
                target = os.path.join(dest, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                # "x": never replace a file, even one that appeared since the check.
                with open(target, "xb") as f:
                    f.write(_read(src))
            copied.append(name)
        offered.add(name)
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    tmp = marker + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"offered": sorted(offered)}, f, indent=1)
    os.replace(tmp, marker)
    return dest, copied


def _copy_to_s3(entries, bucket, prefix):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    # Short timeouts: an unreachable store must not hold the server's start for long.
    s3 = boto3.client(
        "s3",
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}),
    )
    base = prefix + "/" if prefix else ""
    marker = base + MARKER

    def exists(key):
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def any_under(key):
        r = s3.list_objects_v2(Bucket=bucket, Prefix=key + "/", MaxKeys=1)
        return r.get("KeyCount", 0) > 0

    try:
        offered = set(json.loads(s3.get_object(Bucket=bucket, Key=marker)["Body"].read())["offered"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        offered = set()
    dest = base + EXAMPLES_DIR
    copied = []
    for name, files in entries.items():
        if name in offered:
            continue
        key = f"{dest}/{name}"
        if not exists(key) and not any_under(key):
            # s3contents shows a directory only when it holds its ".s3keep" object.
            dirs = {dest} | {f"{dest}/{os.path.dirname(rel)}" for rel, _ in files if os.path.dirname(rel)}
            for d in sorted(dirs):
                if not exists(d + "/.s3keep"):
                    s3.put_object(Bucket=bucket, Key=d + "/.s3keep", Body=b"")
            for rel, src in files:
                s3.put_object(Bucket=bucket, Key=f"{dest}/{rel}", Body=_read(src))
            copied.append(name)
        offered.add(name)
    s3.put_object(
        Bucket=bucket,
        Key=marker,
        Body=json.dumps({"offered": sorted(offered)}, indent=1).encode(),
        ContentType="application/json",
    )
    return f"s3://{bucket}/{dest}", copied


def copy_examples():
    if os.environ.get("STACKHUB_EXAMPLES", "1").lower() in ("0", "false", "no", "off"):
        return
    source = _source_dir()
    if not source or not os.path.isdir(source):
        return
    try:
        entries = _entries(source)
        if os.environ.get("JUPYTER_GATEWAY_URL") and os.environ.get("STACKHUB_S3_BUCKET"):
            where, copied = _copy_to_s3(
                entries,
                os.environ["STACKHUB_S3_BUCKET"],
                os.environ.get("STACKHUB_S3_PREFIX", "").strip("/"),
            )
        elif os.environ.get("HOME"):
            where, copied = _copy_to_home(entries, os.environ["HOME"])
        else:
            return
        if copied:
            log.info("copied the example notebooks to %s: %s", where, ", ".join(copied))
    except Exception as e:  # noqa: BLE001 (examples are a convenience: never stop the server)
        log.warning(
            "could not copy the example notebooks (the server starts without them): %s: %s",
            type(e).__name__,
            _redact(str(e))[:300],
        )


copy_examples()
