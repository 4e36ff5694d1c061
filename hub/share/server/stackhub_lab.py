# The hub's JupyterLab settings for every single-user server (loaded by jupyter_server_config.py
# beside it): JupyterLab reads its settings overrides from its application settings directory,
# which is set here to this directory, so overrides.json beside this file gives every server's
# Lab the hub's defaults (users still change their own settings). Operators add theirs as
# overrides.d/*.json here, or edit overrides.json.
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# (traitlets gives each config file its own __file__.)
_here = os.path.dirname(os.path.abspath(__file__))  # noqa: F821
if os.path.exists(os.path.join(_here, "overrides.json")):
    c.LabApp.app_settings_dir = _here
