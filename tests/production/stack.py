"""The production stack as scripts/serve starts it, for tests/production and bench/big_model.py: gunicorn
with gunicorn.conf.py on a Unix socket, nginx in front of it with deploy/nginx.conf rendered by
deploy/render_nginx_conf.py, on a SQLite database and data folder of its own.

gunicorn also listens on a loopback port (`direct_url`), so a test can compare the same workers with and
without nginx; loopback is not among its trusted proxies there (FORWARDED_ALLOW_IPS), as a stranger's
address would not be.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.servers import REPO, start_gunicorn


def nginx_binary() -> str | None:
    """Debian's nginx, which lives in /usr/sbin (not on every user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthz_status(url: str, timeout: float) -> int:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    finally:
        connection.close()


class ProductionStack:
    """nginx and gunicorn under `root` (made readable by nginx's workers, which run as www-data under root)."""

    def __init__(self, root: Path, **environment: str):
        self.root = root
        self.run = root / "run"
        self.data = root / "data"
        self.environment = environment
        self.gunicorn_log = root / "gunicorn.log"
        self.access_log = root / "gunicorn-access.log"
        self.nginx_log = root / "nginx.log"
        self.direct_url = ""
        self.proxied_url = ""
        self.gunicorn: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("GRIDNODE_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "FORWARDED_ALLOW_IPS"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="gridnode.settings",
            GRIDNODE_DATA_DIR=str(self.data),
            SECRET_KEY="production-stack-tests",
            GRIDNODE_ACCESS_LOG=str(self.access_log),
            FORWARDED_ALLOW_IPS="192.0.2.1",  # a documentation address: only the Unix socket's peer is trusted
            **self.environment,
        )
        return env

    def start(self) -> "ProductionStack":
        nginx = nginx_binary()
        assert nginx, "nginx is not installed"
        self.run.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.run):
            folder.chmod(0o755)
        env = self.env()
        env.setdefault("GRIDNODE_PUBLIC_BIND", f"127.0.0.1:{free_port()}")
        self.proxied_url = f"http://{env['GRIDNODE_PUBLIC_BIND']}"
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
        subprocess.run([python, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=REPO, env=env, check=True)
        socket_path = self.run / "gunicorn.sock"
        conf = self.run / "nginx.conf"
        with open(conf, "w") as output:
            render = [python, "deploy/render_nginx_conf.py", str(self.run), f"unix:{socket_path}"]
            subprocess.run(render, cwd=REPO, env=env, check=True, stdout=output)
        self.gunicorn, self.direct_url = start_gunicorn(
            env, self.gunicorn_log, "--bind", f"unix:{socket_path}", "--bind", "127.0.0.1:0"
        )
        with open(self.nginx_log, "wb") as output:
            self.nginx = subprocess.Popen(
                [nginx, "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_until_answering(self.proxied_url, within=60)
        return self

    def manage(self, *arguments: str) -> None:
        """Run a manage.py command on the stack's database (DJANGO_SUPERUSER_PASSWORD: admin-password-1)."""
        env = {**self.env(), "DJANGO_SUPERUSER_PASSWORD": "admin-password-1"}
        subprocess.run([sys.executable, "manage.py", *arguments], cwd=REPO, env=env, check=True, timeout=120)

    @staticmethod
    def log_line(log: Path, text: str, within: float = 5) -> str:
        """The one line of `log` holding `text` (gunicorn writes its lines just after the answer)."""
        until = time.monotonic() + within
        while True:
            lines = [line for line in log.read_text().splitlines() if text in line]
            if lines or time.monotonic() > until:
                (line,) = lines
                return line
            time.sleep(0.05)

    def wait_until_answering(self, url: str, within: float = 60) -> None:
        """Until `GET /healthz` answers 200 within a second (after an attack on bare gunicorn, its workers'
        threads come free one after another)."""
        until = time.monotonic() + within
        while time.monotonic() < until:
            assert self.nginx is None or self.nginx.poll() is None, self.nginx_log.read_text()
            try:
                if healthz_status(url, timeout=1) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {within} s")

    def stop(self) -> None:
        """nginx first (QUIT lets it finish what it holds), then gunicorn, as scripts/serve stops them."""
        for process, stop_signal in ((self.nginx, signal.SIGQUIT), (self.gunicorn, signal.SIGTERM)):
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, stop_signal)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
