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
#                        hub (DASK_GATEWAY__AUTH__TYPE=stackhub_dask.SiteAuth)
#
# Dask at the profile's site, below: when the hub gave the server a site's Dask Gateway
# (hub/src/sites/dask.rs sets DASK_GATEWAY__ADDRESS, __PROXY_ADDRESS, __PUBLIC_ADDRESS,
# __AUTH__TYPE=stackhub_dask.SiteAuth, STACKHUB_DASK_SITE):
#   - stackhub_dask (this directory) is importable by the server's kernels (PYTHONPATH, which
#     they inherit) and by the server itself (sys.path), so the stock dask_gateway client in
#     either authenticates as the user through the hub;
#   - dask-labextension's cluster factory (dask config labextension.factory, set through
#     DASK_LABEXTENSION__FACTORY__* unless the environment sets them) is
#     dask_gateway.GatewayCluster: the Dask panel's "+ NEW" starts a cluster at the site as the
#     user, and scales and shuts it down there. Without DASK_GATEWAY__ADDRESS the stock default
#     stays (a LocalCluster).
#   - a cluster's dashboard_link is the hub's (DASK_GATEWAY__PUBLIC_ADDRESS + the cluster's
#     dashboard_route: <hub>/hub/dask/<site>/clusters/<name>/status), served to the signed-in
#     user; the server could not authenticate there. The panel's dashboard paths of the server
#     (dask/dashboard/<id>/...) redirect the browser there (stackhub_dask's server extension),
#     and dashboards pasted into the panel are checked from the browser (browserDashboardCheck in
#     overrides.json), each with the browser's own hub session.
import os
import sys

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# (traitlets gives each config file its own __file__.)
_here = os.path.dirname(os.path.abspath(__file__))  # noqa: F821
if os.environ.get("DASK_GATEWAY__AUTH__TYPE") == "stackhub_dask.SiteAuth":
    _path = os.environ.get("PYTHONPATH", "")
    if _here not in _path.split(os.pathsep):
        os.environ["PYTHONPATH"] = _here + (os.pathsep + _path if _path else "")
if os.environ.get("DASK_GATEWAY__ADDRESS"):
    if _here not in sys.path:
        sys.path.append(_here)
    c.ServerApp.jpserver_extensions.update({"stackhub_dask": True})
    os.environ.setdefault("DASK_LABEXTENSION__FACTORY__MODULE", "dask_gateway")
    os.environ.setdefault("DASK_LABEXTENSION__FACTORY__CLASS", "GatewayCluster")
    # dask reads its environment when first imported: if something imported it before this
    # file ran, read it again (the defaults extensions registered are kept).
    if "dask.config" in sys.modules:
        sys.modules["dask.config"].refresh()

load_subconfig("stackhub_remote.py")  # noqa: F821
load_subconfig("stackhub_s3.py")  # noqa: F821
load_subconfig("stackhub_lab.py")  # noqa: F821
load_subconfig("stackhub_examples.py")  # noqa: F821
