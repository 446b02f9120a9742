"""Peak memory of the serving process for a 1 GiB model on the object store: upload (multipart to the
store), download (streamed from it), and another replica's first inference (its local copy fetched).

usage: .venv/bin/python bench/big_model_s3.py [SIZE_MIB=1024]

bench/big_model.py's measure (VmHWM after the transfer, reset through /proc/PID/clear_refs before it,
minus VmRSS before) on two replicas, each gunicorn with one worker and its own empty data folder, on a
fresh PostgreSQL database and a SeaweedFS started here (as tests/storage does, GRIDNODE_STORAGE=s3).
Replica a takes the upload and the download; replica b, which has never seen the model, runs it once:
its worker fetches the archive into its local copy (hashed on the way) before its inference process
loads it. The inference processes' memory is their own, not the worker's.
Needs root (clear_refs) and PostgreSQL on 127.0.0.1:5432.
"""

import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("BENCH_PORT", "18230")
os.environ.pop("BENCH_NGINX", None)

import big_model  # noqa: E402

from tests.servers import start_seaweedfs  # noqa: E402


def main(size_mib: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="gridnode-bench-s3-"))
    db = f"gridnode_bench_s3_{os.getpid()}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {db}"], check=True)
    store = start_seaweedfs(work / "weed")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    servers = []
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GRIDNODE_", "DATABASE_URL"))},
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
            "SECRET_KEY": "bench-s3",
            "GRIDNODE_WORKERS": "1",
            "GRIDNODE_INFERENCE_PROCESSES": "1",
            # Loading a 1 GiB TorchScript archive from a file peaks past 4 GiB of address space (measured:
            # fails under a 4 GiB RLIMIT_DATA, loads under 6 GiB), past the default load bound of twice
            # the size plus this (models_app/executor_pool.py): raised here so the first inference loads.
            "GRIDNODE_INFERENCE_MEMORY_BYTES": str(4 * 1024**3),
            "GRIDNODE_LOG_LEVEL": "WARNING",
            **store.environment(prefix),
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env={**env, "GRIDNODE_DATA_DIR": str(work / "migrate")},
            check=True,
        )
        archive = work / "big.pt"
        big_model.write_model(archive, size_mib)
        size = archive.stat().st_size
        print(f"model archive: {size / 2**20:.0f} MiB")
        ports = {"a": big_model.PORT, "b": big_model.PORT + 2}
        pids = {}
        for name, port in ports.items():
            server = subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/gunicorn"),
                    "gridnode.wsgi",
                    "--no-control-socket",
                    "--bind",
                    f"127.0.0.1:{port}",
                ],
                cwd=ROOT,
                env={**env, "GRIDNODE_DATA_DIR": str(work / name)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            servers.append(server)
            pids[name] = big_model.worker_pid(server.pid)
        time.sleep(5)  # let the workers finish importing Django and torch

        def peak(name: str, transfer):
            pid = pids[name]
            before = big_model.kib(pid, "VmRSS")
            big_model.reset_peak(pid)
            started = time.perf_counter()
            answer = transfer()
            return time.perf_counter() - started, answer, big_model.kib(pid, "VmHWM") - before

        upload_s, status, upload_growth = peak("a", lambda: big_model.upload(archive, "big"))
        assert status == 200
        keys = store.keys(prefix)
        print(f"upload: {upload_s:.1f} s, worker peak RSS growth {upload_growth / 1024:.0f} MiB; in the store: {keys}")
        assert store.pending_uploads(prefix) == []

        download_s, digest, download_growth = peak("a", lambda: big_model.download("big", work / "copy.pt"))
        same = digest == hashlib.sha256(archive.read_bytes()).hexdigest()
        print(
            f"download: {download_s:.1f} s, worker peak RSS growth {download_growth / 1024:.0f} MiB, same bytes: {same}"
        )

        rows = {"data": [[0.001] * 4096]}

        def first_inference():
            connection = http.client.HTTPConnection("127.0.0.1", ports["b"], timeout=900)
            connection.request("POST", "/model/big", json.dumps(rows), {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                print(f"  replica b answered {response.status}: {answer[:300]!r}")
            return response.status

        # "big" was uploaded without allow_remote_inference: allow it (as the admin's toggle does).
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from models_app.models import HostedModel as H; "
                "H.objects.filter(model_id='big').update(allow_remote_inference=True)",
            ],
            cwd=ROOT,
            env={**env, "GRIDNODE_DATA_DIR": str(work / "migrate")},
            check=True,
        )
        fetch_s, status, fetch_growth = peak("b", first_inference)
        copies = list((work / "b" / "cache" / "stored").glob("*.pt"))
        print(
            f"replica b's first inference: {status} in {fetch_s:.1f} s (fetch, hash, load, run), worker peak RSS "
            f"growth {fetch_growth / 1024:.0f} MiB, local copy {[p.stat().st_size for p in copies]} bytes"
        )
        print(
            f"big_model_s3: size_mib={size / 2**20:.0f} upload_peak_growth_mib={upload_growth / 1024:.0f} "
            f"download_peak_growth_mib={download_growth / 1024:.0f} "
            f"replica_fetch_peak_growth_mib={fetch_growth / 1024:.0f} "
            f"upload_s={upload_s:.1f} download_s={download_s:.1f} replica_first_inference_s={fetch_s:.1f}"
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        store.stop()
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db}"], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
