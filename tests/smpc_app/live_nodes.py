"""Three grid nodes as separate gunicorn servers, each with its own database and data folder, the way
operators start them: for the encrypted-inference tests and for bench/smpc_inference.py.

Each node gets a fresh database: a SQLite file in its folder, or, given a PostgreSQL server URL, a new
database on it (dropped again by `stop`). All three share one GRIDNODE_SMPC_SECRET.
"""

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
ROLES = ("worker0", "worker1", "provider")


@dataclass
class NodeServer:
    """One node: its URL once serving, its gunicorn process group, folder, database and log."""

    name: str
    data_dir: Path
    database_url: str
    log: Path
    url: str = ""
    process: subprocess.Popen | None = None

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass
class SmpcCluster:
    """Two workers and a crypto provider on loopback ports; `start()` migrates and serves them."""

    root: Path
    postgres_url: str | None = None
    smpc_timeout: int = 10
    environment: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeServer] = field(default_factory=list)
    secret: str = field(default_factory=lambda: secrets.token_hex(32))

    def start(self) -> "SmpcCluster":
        """Create the databases, migrate them side by side, start the servers and wait until they answer."""
        suffix = secrets.token_hex(4)
        for name in ROLES:
            data_dir = self.root / name
            data_dir.mkdir(parents=True, exist_ok=True)
            if self.postgres_url:
                database_url = _create_postgres_database(self.postgres_url, f"gridnode_smpc_{name}_{suffix}")
            else:
                database_url = f"sqlite:///{data_dir / 'db.sqlite3'}"
            self.nodes.append(NodeServer(name, data_dir, database_url, data_dir / "server.log"))
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._migrate, self.nodes))
        for node in self.nodes:
            self._serve(node)
        for node in self.nodes:
            _wait_until_serving(node)
        return self

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _environment(self, node: NodeServer) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            DJANGO_SETTINGS_MODULE="gridnode.settings",
            DATABASE_URL=node.database_url,
            GRIDNODE_DATA_DIR=str(node.data_dir),
            SECRET_KEY=secrets.token_hex(32),
            GRIDNODE_SMPC_SECRET=self.secret,
            GRIDNODE_SMPC_TIMEOUT=str(self.smpc_timeout),
            GRIDNODE_BIND="127.0.0.1:0",
            GRIDNODE_WORKERS="2",  # threads: gunicorn.conf.py's default for SMPC nodes
            GRIDNODE_LOG_LEVEL="WARNING",
        )
        env.update(self.environment)
        return env

    def _migrate(self, node: NodeServer) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env=self._environment(node),
            check=True,
            capture_output=True,
        )

    def _serve(self, node: NodeServer) -> None:
        with open(node.log, "wb") as output:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "gridnode.wsgi", "--no-control-socket"],
                cwd=REPO,
                env=self._environment(node),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Kill every server and drop the PostgreSQL databases made for them."""
        for node in self.nodes:
            node.kill()
        if self.postgres_url:
            for node in self.nodes:
                _drop_postgres_database(self.postgres_url, urlsplit(node.database_url).path.lstrip("/"))


def _wait_until_serving(node: NodeServer, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name} exited with {node.process.returncode}:\n{node.log.read_text()}")
        if not node.url and (found := LISTENING.search(node.log.read_text())):
            node.url = f"http://127.0.0.1:{found.group(1)}"
        if node.url:
            with contextlib.suppress(OSError), urllib.request.urlopen(node.url + "/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{node.name} did not serve within {within} s:\n{node.log.read_text()}")


def _admin_connection(postgres_url: str):
    import psycopg2

    parts = urlsplit(postgres_url)
    connection = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    connection.autocommit = True
    return connection


def _create_postgres_database(postgres_url: str, name: str) -> str:
    """A new, empty database on the server of `postgres_url`; answer its URL."""
    connection = _admin_connection(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))


def _drop_postgres_database(postgres_url: str, name: str) -> None:
    connection = _admin_connection(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()
