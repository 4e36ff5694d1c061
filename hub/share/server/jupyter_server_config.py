# jupyter_server configuration of every single-user server the hub starts (a stock
# jupyterhub-singleuser): the hub points JUPYTER_CONFIG_PATH at this directory (written by the
# hub for local servers, /etc/stackhub/server in the single-user image). Each part below acts
# only when the environment the hub set asks for it; everything user-specific comes from that
# environment, and nothing here logs or prints a credential.
#
#   stackhub_remote.py   "Remote Compute Kernels": gateway mode, gateway-token renewal, the S3
#                        contents manager (JUPYTER_GATEWAY_URL, STACKHUB_S3_BUCKET without a home)
#   stackhub_s3.py       full JupyterLab: the user's S3 space in the S3 browser (jupyter-fs), its
#                        credentials from the hub (STACKHUB_S3_CREDENTIALS_URL, not in gateway mode)
#   stackhub_lab.py      every server: the hub's JupyterLab settings (overrides.json here)
#   stackhub_examples.py the example notebooks (examples/ here) copied into a new home or S3 space
#                        on first start (off with STACKHUB_EXAMPLES=0)
c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

load_subconfig("stackhub_remote.py")  # noqa: F821
load_subconfig("stackhub_s3.py")  # noqa: F821
load_subconfig("stackhub_lab.py")  # noqa: F821
load_subconfig("stackhub_examples.py")  # noqa: F821
