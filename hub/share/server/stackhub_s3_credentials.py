# The AWS credential_process of a full JupyterLab's S3 space (named in the AWS config file that
# stackhub_s3.py writes): asks the hub for fresh temporary credentials for this server's user at
# its site and prints them as credential_process JSON (Version 1, AccessKeyId, SecretAccessKey,
# SessionToken, Expiration). botocore runs it when it needs credentials and again before they
# expire. Reads STACKHUB_S3_CREDENTIALS_URL and the server's JUPYTERHUB_API_TOKEN from its
# environment (never from its arguments); standard library only, so any Python runs it.
import json
import os
import sys
import urllib.error
import urllib.request


def main():
    url = os.environ.get("STACKHUB_S3_CREDENTIALS_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not url or not token:
        missing = [n for n, v in (("STACKHUB_S3_CREDENTIALS_URL", url), ("JUPYTERHUB_API_TOKEN", token)) if not v]
        print(f"stackhub S3 credentials: {', '.join(missing)} not set", file=sys.stderr)
        return 1
    req = urllib.request.Request(
        url,
        data=b"{}",
        method="POST",
        headers={"Authorization": "token " + token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            message = json.load(e).get("message", "")
        except ValueError:
            message = ""
        print(f"stackhub S3 credentials: the hub answered {e.code} at {url}: {message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"stackhub S3 credentials: cannot get them from {url}: {e}", file=sys.stderr)
        return 1
    json.dump(body, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
