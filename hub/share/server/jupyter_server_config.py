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
#   stackhub_dask.py     not a config file: the Dask Gateway client's authentication through the
#                        hub (DASK_GATEWAY__AUTH__TYPE=stackhub_dask.SiteAuth); when the hub set
#                        that, this directory goes on the PYTHONPATH of the server's kernels
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

if os.environ.get("DASK_GATEWAY__AUTH__TYPE") == "stackhub_dask.SiteAuth":
    _here = os.path.dirname(os.path.abspath(__file__))  # noqa: F821
    _path = os.environ.get("PYTHONPATH", "")
    if _here not in _path.split(os.pathsep):
        os.environ["PYTHONPATH"] = _here + (os.pathsep + _path if _path else "")

load_subconfig("stackhub_remote.py")  # noqa: F821
load_subconfig("stackhub_s3.py")  # noqa: F821
load_subconfig("stackhub_lab.py")  # noqa: F821
load_subconfig("stackhub_examples.py")  # noqa: F821
