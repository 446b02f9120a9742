"""Writes deploy/nginx.conf with its placeholders (names between at signs) filled in, for scripts/serve and tests.

usage: .venv/bin/python deploy/render_nginx_conf.py RUN_DIR UPSTREAM [UPSTREAM...] > RUN_DIR/nginx.conf

RUN_DIR holds nginx's pid file, temp folders and logs; UPSTREAM is gunicorn's address as nginx names it
(`unix:/path/gunicorn.sock` or `127.0.0.1:8000`); several are replicas of one node (docs/deployment.md),
each request going to the one with the fewest in progress, and a request no replica could be reached
for going to the next. The body limit and the static folder come from the
node's settings (GRIDNODE_MAX_UPLOAD_BYTES, STATIC_ROOT), so nginx and the node cannot disagree; the
rest from these variables (docs/operations.md):

GRIDNODE_PUBLIC_BIND (127.0.0.1:8080)     where nginx listens (nginx's `listen`: ADDR:PORT or PORT)
GRIDNODE_CLIENT_HEADER_TIMEOUT (10)       seconds for a request's line and headers to arrive
GRIDNODE_CLIENT_BODY_TIMEOUT (20)         seconds a request body may pause between two reads
GRIDNODE_CONNECTIONS_PER_CLIENT (64)      requests in progress at once per client address
GRIDNODE_NGINX_WORKERS (auto)             nginx worker processes
"""

import os
import pwd
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")

from django.conf import settings  # noqa: E402

from gridnode.env import env_int, env_str  # noqa: E402

PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def worker_user_line() -> str:
    """nginx's `user` line: as root, workers run as www-data (or nobody); otherwise as whoever runs nginx."""
    if os.geteuid() != 0:
        return "# not root: the workers run as the user who started nginx"
    for user, group in (("www-data", "www-data"), ("nobody", "nogroup")):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return f"user {user} {group};"
    return "user root;  # no unprivileged user on this machine"


def render(template: str, values: dict[str, str]) -> str:
    """The template with each @NAME@ replaced; a name without a value is an error, not an empty string."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda found: values[found.group(1)], template)


def upstream_lines(upstreams: list[str]) -> str:
    """The upstream block's server lines: one replica, or several balanced by requests in progress."""
    for upstream in upstreams:
        if not re.fullmatch(r"unix:/[^\s;{}]+|[A-Za-z0-9.\-\[\]:]+:\d+", upstream):
            raise ValueError(f"not an upstream address (unix:/path or HOST:PORT): {upstream!r}")
    servers = [f"        server {upstream};" for upstream in upstreams]
    if len(upstreams) > 1:
        servers.insert(0, "        least_conn;")
    return "\n".join(servers)


def main(run_dir: str, *upstreams: str) -> None:
    values = {
        "USER_LINE": worker_user_line(),
        "WORKER_PROCESSES": env_str("GRIDNODE_NGINX_WORKERS", "auto"),
        "RUN_DIR": str(Path(run_dir).resolve()),
        "LISTEN": env_str("GRIDNODE_PUBLIC_BIND", "127.0.0.1:8080"),
        "UPSTREAM_SERVERS": upstream_lines(list(upstreams)),
        # One replica: nothing to try next. Several: a connection refused or timed out tries the next.
        "NEXT_UPSTREAM": "error timeout" if len(upstreams) > 1 else "off",
        "STATIC_ROOT": str(Path(settings.STATIC_ROOT).resolve()),
        "MAX_BODY_BYTES": str(settings.GRIDNODE_MAX_UPLOAD_BYTES),
        "CLIENT_HEADER_TIMEOUT": str(env_int("GRIDNODE_CLIENT_HEADER_TIMEOUT", 10, minimum=1)),
        "CLIENT_BODY_TIMEOUT": str(env_int("GRIDNODE_CLIENT_BODY_TIMEOUT", 20, minimum=1)),
        "CONNECTIONS_PER_CLIENT": str(env_int("GRIDNODE_CONNECTIONS_PER_CLIENT", 64, minimum=1)),
        # Past gunicorn's own timeout (gunicorn.conf.py), so the node answers its own deadlines first.
        "PROXY_READ_TIMEOUT": str(env_int("GRIDNODE_TIMEOUT", 300, minimum=1) + 30),
    }
    sys.stdout.write(render((ROOT / "deploy" / "nginx.conf").read_text(), values))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1], *sys.argv[2:])
