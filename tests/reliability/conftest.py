"""Live nodes for the reliability tests: the production WSGI stack in a threaded server in this process,
and real gunicorn processes on the test's own PostgreSQL database and data folder."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.db import connection

from tests.reliability.helpers import request

NEEDS_POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (CI runs it): concurrent writers, and server processes sharing the test's "
    "database; SQLite serializes writers and its test database lives in this process's memory",
)
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


class QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture
def live_node(transactional_db, data_dir):
    """The URL of `gridnode.wsgi.application` (fast path, WholeBodies, Django) served by a threaded HTTP
    server in this process: one thread and one database connection per request, as under gunicorn's
    gthread workers, and this process's settings and monkeypatches apply."""
    from gridnode.wsgi import application

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietRequestHandler, allow_reuse_address=False)
    server.set_app(application)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def database_url_of_this_test() -> str:
    """A DATABASE_URL naming the database this test runs on (pytest-django's `test_<name>`)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{credentials}@{db['HOST'] or ''}" if credentials else db["HOST"] or ""
    return f"postgres://{host}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


@dataclass
class NodeProcess:
    """A gunicorn master and its workers, in a process group of their own."""

    url: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the master and every worker at once, as a crash or the OOM killer would."""
        with contextlib.suppress(ProcessLookupError):  # the group: workers too, even if the master is gone
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def node_processes(transactional_db, data_dir):
    """Start gunicorn serving the node on a free loopback port, on this test's database and data folder.

    `start(**environment)` answers a `NodeProcess` once `/healthz` answers; every process started is
    killed when the test ends, before its database is emptied. On SQLite a test must name a database of
    the process's own in `DATABASE_URL`.
    """
    started: list[NodeProcess] = []

    def start(**environment: str) -> NodeProcess:
        if "DATABASE_URL" not in environment and connection.vendor != "postgresql":
            pytest.skip("a server process needs the test's database to be PostgreSQL (see NEEDS_POSTGRESQL)")
        log = data_dir / f"gunicorn-{len(started)}.log"
        env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            DJANGO_SETTINGS_MODULE="gridnode.settings",
            DATABASE_URL=database_url_of_this_test(),
            GRIDNODE_DATA_DIR=str(data_dir),
            SECRET_KEY="reliability-tests",
            GRIDNODE_BIND="127.0.0.1:0",  # the kernel picks a free port; gunicorn logs it
            GRIDNODE_WORKERS="1",
            GRIDNODE_THREADS="4",
            GRIDNODE_DB_CONN_MAX_AGE="0",  # no connection outlives its request, so the test database can go
            GRIDNODE_LOG_LEVEL="WARNING",
        )
        env.update(environment)
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "gridnode.wsgi", "--no-control-socket"],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = NodeProcess(url="", process=process, log=log)
        started.append(node)
        node.url = _wait_until_serving(node)
        return node

    yield start
    for node in started:
        node.kill()  # nothing of theirs needs a graceful end: their data folder is the test's temp folder


def _wait_until_serving(node: NodeProcess, within: float = 60) -> str:
    deadline = time.monotonic() + within
    url = None
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {node.process.returncode}:\n{node.log.read_text()}")
        if url is None and (found := LISTENING.search(node.log.read_text())):
            url = f"http://127.0.0.1:{found.group(1)}"
        if url is not None:
            try:
                if request(url, "GET", "/healthz", timeout=5)[0] == 200:
                    return url
            except OSError:
                pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not serve within {within} s:\n{node.log.read_text()}")
