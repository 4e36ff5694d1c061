"""Run notebooks top to bottom against a running single-user server, as a user would.

Used by tests/tests/examples_e2e.rs. Each notebook is read from the server's contents API and
executed by nbclient with jupyter_server's GatewayKernelManager pointed at the server: the kernel
is started through the server's REST API (POST api/kernels) and driven over its kernel
WebSocket, exactly as the Lab does, so a remote-kernels server's kernel runs at its site.

    STACKHUB_NB_SERVER=http://HOST/user/NAME STACKHUB_NB_TOKEN=... \\
        python run_notebooks.py OUT_DIR PATH.ipynb...

The token comes from the environment (never argv). Prints one JSON line: for each notebook its
path, seconds, the kernelspecs the server started for it, the text of its stdout stream outputs
and the error, if a cell failed. The executed
notebooks are written to OUT_DIR.
"""

import json
import os
import sys
import time
import urllib.request
from threading import Thread

import nbformat
import websocket
from jupyter_core.utils import ensure_async
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelClient, GatewayKernelManager
from jupyter_server.utils import url_escape, url_path_join
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


class TokenKernelClient(GatewayKernelClient):
    """GatewayKernelClient opens the kernel WebSocket without the gateway's credentials (inside
    jupyter_server the browser's session carries them); this one sends the Authorization header
    of the REST requests on it too."""

    async def start_channels(self, shell=True, iopub=True, stdin=True, hb=True, control=True):
        gc = GatewayClient.instance()
        ws_url = url_path_join(gc.ws_url or "", gc.kernels_endpoint, url_escape(self.kernel_id), "channels")
        self.channel_socket = websocket.create_connection(
            ws_url,
            timeout=gc.KERNEL_LAUNCH_TIMEOUT,
            enable_multithread=True,
            header=[f"Authorization: {gc.auth_scheme} {gc.auth_token}"],
        )
        # The channels of jupyter_client's KernelClient, then GatewayKernelClient's router.
        await ensure_async(
            super(GatewayKernelClient, self).start_channels(
                shell=shell, iopub=iopub, stdin=stdin, hb=hb, control=control
            )
        )
        self.response_router = Thread(target=self._route_responses)
        self.response_router.start()


# The kernel models the server answered kernel starts with (their "name" is the kernelspec
# that runs).
STARTED = []


class TokenKernelManager(GatewayKernelManager):
    client_class = TokenKernelClient
    client_factory = TokenKernelClient

    async def start_kernel(self, **kwargs):
        # GatewayKernelManager asks for "python3" unless told: start the notebook's kernelspec
        # (nbclient sets kernel_name from the notebook's metadata), as the Lab does.
        kwargs.setdefault("kernel_name", self.kernel_name)
        await super().start_kernel(**kwargs)
        STARTED.append(dict(self.kernel))


def fetch(server, token, path):
    req = urllib.request.Request(
        f"{server}/api/contents/{urllib.request.quote(path)}?content=1&type=notebook",
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return nbformat.from_dict(json.load(resp)["content"])


def main():
    server = os.environ["STACKHUB_NB_SERVER"].rstrip("/")
    token = os.environ["STACKHUB_NB_TOKEN"]
    out_dir, paths = sys.argv[1], sys.argv[2:]
    gc = GatewayClient.instance()
    gc.url = server
    gc.auth_scheme = "token"
    gc.auth_token = token
    gc.request_timeout = 120.0
    gc.connect_timeout = 120.0
    gc.init_connection_args()
    os.makedirs(out_dir, exist_ok=True)
    report = []
    for path in paths:
        nb = fetch(server, token, path)
        STARTED.clear()
        started = time.monotonic()
        error = None
        try:
            NotebookClient(nb, kernel_manager_class=TokenKernelManager, timeout=180).execute()
        except CellExecutionError as e:
            error = str(e)[-2000:]
        seconds = round(time.monotonic() - started, 1)
        stdout = "".join(
            o.get("text", "")
            for cell in nb.cells
            for o in cell.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stdout"
        )
        nbformat.write(nb, os.path.join(out_dir, os.path.basename(path)))
        report.append(
            {
                "path": path,
                "seconds": seconds,
                "kernels": [k.get("name") for k in STARTED],
                "stdout": stdout,
                "error": error,
            }
        )
    print(json.dumps({"notebooks": report}))


if __name__ == "__main__":
    main()
