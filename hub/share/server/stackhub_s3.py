# The "S3 space" part of a full JupyterLab's configuration (loaded by jupyter_server_config.py
# beside it): the user's S3 space at the profile's site in the Lab's S3 browser (jupyter-fs),
# with temporary credentials the hub issues and that refresh on their own. It acts only when the
# hub gave the server an S3 space and the server is not in gateway mode (stackhub_remote.py
# serves remote-kernels servers). From the environment the hub sets:
#
#   AWS_ENDPOINT_URL, AWS_DEFAULT_REGION / AWS_REGION   where the space is (botocore reads them)
#   STACKHUB_S3_BUCKET, STACKHUB_S3_PREFIX                the bucket and the user's prefix in it
#   STACKHUB_S3_SITE, STACKHUB_S3_SITE_NAME               the site
#   STACKHUB_S3_CREDENTIALS_URL                           POST: credential_process JSON (hub)
#
# No static key reaches the server: an AWS config file (AWS_CONFIG_FILE, set in this process's
# environment so every kernel inherits it) names stackhub_s3_credentials.py as its
# credential_process; botocore, boto3, s3fs (aiobotocore) in kernels and the S3 browser run it
# when they need credentials and again before they expire. Nothing here logs a credential.
import os
import shlex
import sys

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)


def _write_aws_config(here):
    """The AWS config file whose credential_process asks the hub; returns its path."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = jupyter_runtime_dir()
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    server = os.environ.get("JUPYTERHUB_SERVER_NAME") or "default"
    path = os.path.join(runtime, f"stackhub-s3-{server}.aws-config")
    script = os.path.join(here, "stackhub_s3_credentials.py")
    text = (
        "# Written by the hub's server configuration (stackhub_s3.py) at every server start.\n"
        "[default]\n"
        f"credential_process = {shlex.quote(sys.executable)} {shlex.quote(script)}\n"
    )
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def _ensure_space_marker(bucket, prefix):
    """A new user's space holds no object, and an S3 prefix without objects cannot be listed as
    a folder (s3fs then looks at the parent, which the credentials may not list), so the S3
    browser could not open it: put an empty hidden object PREFIX.keep (the browser hides dot
    files). A marker named PREFIX itself would not do: some stores (the embedded one) keep such
    a key as a directory that no listing shows. Failing here never stops the server."""
    try:
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2})
        s3 = boto3.client("s3", config=config)
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if not listed.get("KeyCount"):
            s3.put_object(Bucket=bucket, Key=prefix + ".keep", Body=b"")
    except Exception as e:  # noqa: BLE001 (the server starts without the marker)
        # botocore's messages name the operation and the error code, never the credentials.
        print(f"stackhub: could not prepare the S3 space s3://{bucket}/{prefix}: {e}", file=sys.stderr)


_bucket = os.environ.get("STACKHUB_S3_BUCKET", "")
if (
    os.environ.get("STACKHUB_S3_CREDENTIALS_URL")
    and _bucket
    and not os.environ.get("JUPYTER_GATEWAY_URL")
):
    # (traitlets gives each config file its own __file__.)
    _here = os.path.dirname(os.path.abspath(__file__))  # noqa: F821
    # Set before anything starts kernels, so kernels inherit it; the user's own ~/.aws/config
    # is not read by this server's processes (their ~/.aws/credentials still is, and wins).
    os.environ["AWS_CONFIG_FILE"] = _write_aws_config(_here)
    _prefix = os.environ.get("STACKHUB_S3_PREFIX", "").strip("/")
    _site = os.environ.get("STACKHUB_S3_SITE_NAME") or os.environ.get("STACKHUB_S3_SITE", "")
    if _prefix:
        _ensure_space_marker(_bucket, _prefix + "/")
    # jupyter-fs: its contents manager serves the home (the default file browser, unchanged) and
    # each resource under its own drive; the one resource is the user's S3 space, named as the
    # Data Lake's Lab names its browser. Users cannot add resources (no credential forms). The
    # space is an fsspec DirFileSystem rooted at s3://BUCKET/PREFIX: with the plain s3:// URL
    # jupyter-fs checks the root with a HeadObject on "PREFIX" without its slash, which
    # credentials confined to PREFIX/ may not do (403).
    c.ServerApp.contents_manager_class = "jupyterfs.metamanager.MetaManager"
    # (jupyter-fs ships no jupyter_server_config.d entry: its server extension is enabled here.)
    c.ServerApp.jpserver_extensions.update({"jupyterfs.extension": True})
    c.JupyterFs.resources = [
        {
            "name": f"S3 Object Storage - {_site}" if _site else "S3 Object Storage",
            "url": "dir://",
            "type": "fsspec",
            "auth": "none",
            "defaultWritable": True,
            "kwargs": {"path": f"{_bucket}/{_prefix}".rstrip("/"), "target_protocol": "s3"},
        }
    ]
    c.JupyterFs.allow_user_resources = False
    c.JupyterFs.surface_init_errors = True
