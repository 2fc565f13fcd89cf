# Rendered by torchship. The token comes from $JUPYTER_TOKEN; without one, the
# server generates a random token and prints it: access is never open.
c = get_config()  # noqa: F821
c.ServerApp.ip = "0.0.0.0"  # inside the container; publish it to 127.0.0.1 on the host
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/workspace"
c.IdentityProvider.token = __import__("os").environ.get("JUPYTER_TOKEN") or None
c.ServerApp.allow_remote_access = True
c.ServerApp.allow_root = False
# Every endpoint needs the token except those Jupyter marks public (/api: the version only;
# the login page).
c.ServerApp.allow_unauthenticated_access = False
