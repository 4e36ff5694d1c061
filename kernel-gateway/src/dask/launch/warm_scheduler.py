# A Dask scheduler started ahead of its cluster (stackhub-gateway's local launcher, `[dask]
# warm_schedulers`): the slow part of a scheduler's start, importing distributed, bokeh's
# dashboard and dask-gateway's preload, is done before anyone asks for a cluster. Then one line
# of JSON on stdin says which cluster it becomes: {"cwd", "env", "log", "args"} (no secret: the
# cluster's token and key are files named in env). Stdin closing first (the gateway went away)
# ends it. It then runs `dask scheduler <args>` in this process.
import json
import os
import sys

import dask.config
import distributed  # noqa: F401
import distributed.cli.dask_scheduler
import dask_gateway.scheduler_preload  # noqa: F401

try:  # the dashboard's modules: only where bokeh is installed (a scheduler serves none without)
    import distributed.dashboard.scheduler  # noqa: F401
except ImportError:
    pass

line = sys.stdin.readline()
if not line.strip():
    sys.exit(0)
spec = json.loads(line)
fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
sys.stdout.flush()
sys.stderr.flush()
os.dup2(fd, 1)
os.dup2(fd, 2)
os.close(fd)
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.close(devnull)
os.chdir(spec["cwd"])
os.environ.clear()
os.environ.update(spec["env"])
# The DASK_* settings (TLS files, encryption, temporary directory) are read from the
# environment again: dask read it once already, at import.
dask.config.refresh()
sys.argv = ["dask scheduler", *spec["args"]]
distributed.cli.dask_scheduler.main.main(args=spec["args"], prog_name="dask scheduler")
