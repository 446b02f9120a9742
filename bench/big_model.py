"""Peak memory of the serving process for a 1 GiB model upload (multipart) and download (raw bytes).

usage: .venv/bin/python bench/big_model.py [SIZE_MIB=1024]
       BENCH_NGINX=1 .venv/bin/python bench/big_model.py [SIZE_MIB=1024]   through nginx, as scripts/serve

With BENCH_NGINX=1 the transfers go through nginx (deploy/nginx.conf, one nginx worker, gunicorn on a Unix
socket) and nginx's worker's peak RSS growth is printed beside gunicorn's: nginx writes the request body
to a temp file and hands gunicorn a whole request, and buffers the download the same way.

Starts the node the production way (gunicorn with gunicorn.conf.py, one worker so there is one process
to watch) on a fresh PostgreSQL database, writes a TorchScript model of about SIZE_MIB, streams it up as a
multipart file part and back down with `Accept: application/octet-stream`, and prints the worker's
peak RSS growth for each (VmHWM after the transfer, reset through /proc/PID/clear_refs before it, minus
VmRSS before). Archives are checked in an inference process (models_app/executor.py), whose memory is
its own, not the worker's.
Needs root (clear_refs) and PostgreSQL on 127.0.0.1:5432.
"""

import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("BENCH_PORT", "18210"))
VIA_NGINX = bool(os.environ.get("BENCH_NGINX"))
# Where the transfers go: gunicorn, or nginx in front of it.
TARGET_PORT = PORT + 1 if VIA_NGINX else PORT
CHUNK = 1024 * 1024


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def worker_pid(master: int, name: str = "gunicorn") -> int:
    """The first child of `master` whose command line names `name` (the gunicorn master's other child is
    the inference processes' supervisor)."""
    for _ in range(100):
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        for child in children:
            if name.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        time.sleep(0.1)
    raise RuntimeError(f"no {name} worker")


def write_model(path: Path, size_mib: int) -> None:
    side = 4096  # one Linear(4096, 4096) is 64 MiB of float32 weights
    layers = max(1, size_mib // 64)
    model = torch.nn.Sequential(*[torch.nn.Linear(side, side, bias=False) for _ in range(layers)]).eval()
    torch.jit.save(torch.jit.script(model), path)


def upload(path: Path, model_id: str) -> int:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model_id"\r\n\r\n{model_id}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="allow_download"\r\n\r\ntrue\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"; filename="big.pt"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        with open(path, "rb") as source:
            yield from iter(lambda: source.read(CHUNK), b"")
        yield tail

    connection = http.client.HTTPConnection("127.0.0.1", TARGET_PORT, timeout=900)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + path.stat().st_size + len(tail)),
    }
    connection.request("POST", "/serve-model", body=body(), headers=headers)
    response = connection.getresponse()
    print(f"  upload answer: {response.status} {response.read()[:120]!r}")
    return response.status


def download(model_id: str, target: Path) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", TARGET_PORT, timeout=900)
    connection.request("GET", f"/get_model/{model_id}", headers={"Accept": "application/octet-stream"})
    response = connection.getresponse()
    digest = hashlib.sha256()
    with open(target, "wb") as sink:
        for chunk in iter(lambda: response.read(CHUNK), b""):
            digest.update(chunk)
            sink.write(chunk)
    print(f"  download answer: {response.status}")
    return digest.hexdigest()


def main(size_mib: int) -> None:
    work = Path(tempfile.mkdtemp())
    db = f"gridnode_bench_big_{os.getpid()}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {db}"], check=True)
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "GRIDNODE_DATA_DIR": str(work / "data"),
        "GRIDNODE_WORKERS": "1",
    }
    server = nginx = None
    binds = ["--bind", f"127.0.0.1:{PORT}"]
    if VIA_NGINX:
        run = work / "run"
        run.mkdir()
        for folder in (work, run):
            folder.chmod(0o755)  # nginx's workers (www-data) reach the socket and their temp folders
        binds += ["--bind", f"unix:{run}/gunicorn.sock"]
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        archive = work / "big.pt"
        write_model(archive, size_mib)
        size = archive.stat().st_size
        print(f"model archive: {size / 2**20:.0f} MiB")
        server = subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), "gridnode.wsgi", "--no-control-socket", *binds],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid = worker_pid(server.pid)
        time.sleep(3)  # let the worker finish importing Django and torch
        watched = {"worker": pid}
        if VIA_NGINX:
            nginx_env = {**env, "GRIDNODE_PUBLIC_BIND": f"127.0.0.1:{TARGET_PORT}", "GRIDNODE_NGINX_WORKERS": "1"}
            render = [sys.executable, "deploy/render_nginx_conf.py", str(run), f"unix:{run}/gunicorn.sock"]
            (run / "nginx.conf").write_bytes(
                subprocess.run(render, cwd=ROOT, env=nginx_env, check=True, capture_output=True).stdout
            )
            nginx_binary = shutil.which("nginx") or "/usr/sbin/nginx"
            nginx = subprocess.Popen([nginx_binary, "-e", "stderr", "-c", str(run / "nginx.conf"), "-g", "daemon off;"])
            watched["nginx worker"] = worker_pid(nginx.pid, name="nginx")
            time.sleep(1)

        def peaks(transfer):
            """Run `transfer` and answer its seconds, its answer and each watched process's peak RSS growth (KiB)."""
            before = {name: kib(watched_pid, "VmRSS") for name, watched_pid in watched.items()}
            for watched_pid in watched.values():
                reset_peak(watched_pid)
            started = time.perf_counter()
            answer = transfer()
            seconds = time.perf_counter() - started
            return (
                seconds,
                answer,
                {name: kib(watched_pid, "VmHWM") - before[name] for name, watched_pid in watched.items()},
            )

        upload_s, status, growth = peaks(lambda: upload(archive, "big"))
        assert status == 200
        upload_growth = growth["worker"]
        print(f"upload: {upload_s:.1f} s, worker peak RSS growth {upload_growth / 1024:.0f} MiB")
        if VIA_NGINX:
            print(f"upload: nginx worker peak RSS growth {growth['nginx worker'] / 1024:.1f} MiB")

        download_s, digest, growth = peaks(lambda: download("big", work / "copy.pt"))
        download_growth = growth["worker"]
        if VIA_NGINX:
            print(f"download: nginx worker peak RSS growth {growth['nginx worker'] / 1024:.1f} MiB")
        same = digest == hashlib.sha256(archive.read_bytes()).hexdigest()
        print(
            f"download: {download_s:.1f} s, worker peak RSS growth {download_growth / 1024:.0f} MiB, same bytes: {same}"
        )
        print(
            f"big_model: size_mib={size / 2**20:.0f} upload_peak_growth_mib={upload_growth / 1024:.0f} "
            f"download_peak_growth_mib={download_growth / 1024:.0f} upload_s={upload_s:.1f} download_s={download_s:.1f}"
        )
    finally:
        for process in (nginx, server):
            if process is not None:
                process.terminate()
                process.wait()
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db}"], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
