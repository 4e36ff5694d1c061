"""A hub-managed, proxied service for the end-to-end tests: who is logged in.

It logs browser users in through the hub with JupyterHub's own `HubOAuth` (PyPI `jupyterhub`),
reading only the `JUPYTERHUB_*` environment the hub gives a managed service. Routes, under
`JUPYTERHUB_SERVICE_PREFIX`:
  ""                the logged-in user's model, as the hub returned it (JSON)
  "oauth_callback"  HubOAuth's callback
  "env-names"       the names (never the values) of the variables in this process's environment
"""

import json
import os
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.web import Application, RequestHandler, authenticated


class WhoAmI(HubOAuthenticated, RequestHandler):
    @authenticated
    def get(self):
        self.set_header("content-type", "application/json")
        self.write(json.dumps(self.get_current_user(), sort_keys=True))


class EnvNames(HubOAuthenticated, RequestHandler):
    @authenticated
    def get(self):
        self.set_header("content-type", "application/json")
        self.write(json.dumps(sorted(os.environ)))


def main():
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    app = Application(
        [
            (prefix, WhoAmI),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (url_path_join(prefix, "env-names"), EnvNames),
        ],
        cookie_secret=os.urandom(32),
    )
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    HTTPServer(app).listen(url.port, url.hostname)
    IOLoop.current().start()


if __name__ == "__main__":
    main()
