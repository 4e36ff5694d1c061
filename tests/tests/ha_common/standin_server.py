"""A stand-in for jupyterhub-singleuser in the failover test (tests/tests/ha_failover.rs).

Started by the hub's local-process spawner through a profile's `cmd`: appends one line (its pid)
to `$STANDIN_DIR/<user>` at once, so the test can tell a server started twice; listens at once
where the spawner told it to (`JUPYTERHUB_SERVICE_URL`: binding late would leave its port free
for another spawn to be given), but answers 503 for its first `$STANDIN_DELAY` seconds, so its
spawn stays in flight (the hub's readiness probe of `{prefix}api` wants a status below 500);
then answers every GET with 200 and a small JSON body naming its user and pid.
Arguments (the spawner adds `--allow-root` as root) are ignored.
"""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

user = os.environ["JUPYTERHUB_USER"]
with open(os.path.join(os.environ["STANDIN_DIR"], user), "a") as f:
    f.write(f"{os.getpid()}\n")

ready_at = time.monotonic() + float(os.environ.get("STANDIN_DELAY", "3"))
url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
body = json.dumps({"standin": user, "pid": os.getpid()}).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if time.monotonic() >= ready_at else 503
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


ThreadingHTTPServer((url.hostname, url.port), Handler).serve_forever()
