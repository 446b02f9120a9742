"""Requests per second through nginx with one replica and with two, on PostgreSQL and the object store.

usage: .venv/bin/python bench/replicas.py [REQUESTS=3000] [ROUNDS=3] [CONCURRENCY=8]

Starts SeaweedFS (as tests/storage does), a fresh PostgreSQL database, two replicas of the node (gunicorn
with gunicorn.conf.py, each its own empty GRIDNODE_DATA_DIR and the settings in the environment) and two
nginx (deploy/nginx.conf): one in front of replica a alone, one in front of both. It uploads the
reference MLP (../shared/bench/make_mlp.py) and alternates ApacheBench rounds (../shared/bench/load.sh)
between the two proxies, then prints each round and the medians, and how nginx spread the requests.

Both replicas run on this machine: on 2 cores two replicas share the same cores, so this measures what
the second replica's processes cost or gain here, not what a second host would add.
Needs PostgreSQL on 127.0.0.1:5432 and nginx.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.production.stack import free_port, healthz_status, nginx_binary  # noqa: E402
from tests.servers import start_gunicorn, start_seaweedfs  # noqa: E402

SHARED = Path(os.environ.get("SHARED_BENCH", ROOT.parent / "shared" / "bench"))
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c"]


def load(url: str, body: Path, concurrency: int, requests: int) -> dict[str, float]:
    out = (
        subprocess.run(
            [str(SHARED / "load.sh"), url, str(body), str(concurrency), str(requests)],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return {
        key: float(value) if value not in ("NA", "") else float("nan") for key, value in re.findall(r"(\w+)=(\S+)", out)
    }


def cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by every process of each process group, by group name."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(groups, 0.0)
    names = {pgid: name for name, pgid in groups.items()}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(fields[2]))  # the process group
        if name is not None:
            totals[name] += (int(fields[11]) + int(fields[12])) / tick
        elif b"postgres" in (stat.parent / "cmdline").read_bytes()[:64]:
            totals["postgres"] = totals.get("postgres", 0.0) + (int(fields[11]) + int(fields[12])) / tick
    # The whole machine (ab, other users' processes included), from /proc/stat's first line.
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    totals["machine"] = (sum(int(value) for value in first) - int(first[3]) - int(first[4])) / tick
    return totals


def start_nginx(run: Path, env: dict, upstreams: list[str]) -> tuple[subprocess.Popen, str]:
    run.mkdir(parents=True)
    run.chmod(0o755)
    bind = f"127.0.0.1:{free_port()}"
    render = [sys.executable, "deploy/render_nginx_conf.py", str(run), *upstreams]
    conf = subprocess.run(render, cwd=ROOT, env={**env, "GRIDNODE_PUBLIC_BIND": bind}, check=True, capture_output=True)
    (run / "nginx.conf").write_bytes(conf.stdout)
    process = subprocess.Popen(
        [nginx_binary(), "-e", "stderr", "-c", str(run / "nginx.conf"), "-g", "daemon off;"], start_new_session=True
    )
    url = f"http://{bind}"
    for _ in range(100):
        try:
            if healthz_status(url, timeout=1) == 200:
                break
        except OSError:
            pass
        subprocess.run(["sleep", "0.1"], check=True)
    return process, url


def main(requests: int, rounds: int, concurrency: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="gridnode-bench-replicas-"))
    work.chmod(0o755)
    db = f"gridnode_bench_replicas_{os.getpid()}"
    subprocess.run([*PSQL, f"CREATE DATABASE {db}"], check=True)
    store = start_seaweedfs(work / "weed")
    processes: list[subprocess.Popen] = []
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GRIDNODE_", "DATABASE_URL"))},
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
            "SECRET_KEY": "bench-replicas",
            "GRIDNODE_LOG_LEVEL": "WARNING",
            **store.environment(f"bench-{uuid.uuid4().hex[:8]}"),
        }
        for name, value in os.environ.items():  # the operator's knobs (GRIDNODE_WORKERS, ...) apply to both
            if name.startswith("GRIDNODE_") and name not in env:
                env[name] = value
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env={**env, "GRIDNODE_DATA_DIR": str(work / "migrate")},
            check=True,
        )
        addresses = []
        for name in ("a", "b"):
            process, url = start_gunicorn(
                {**env, "GRIDNODE_DATA_DIR": str(work / name)}, work / f"{name}.log", "--bind", "127.0.0.1:0"
            )
            processes.append(process)
            addresses.append(url.removeprefix("http://"))
        proxy_env = {
            **env,
            "GRIDNODE_DATA_DIR": str(work / "proxy"),
            "GRIDNODE_NGINX_WORKERS": os.environ.get("GRIDNODE_NGINX_WORKERS", "1"),
        }
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=ROOT, env=proxy_env, check=True
        )
        one, one_url = start_nginx(work / "run-one", proxy_env, addresses[:1])
        two, two_url = start_nginx(work / "run-two", proxy_env, addresses)
        processes += [one, two]

        subprocess.run([sys.executable, str(SHARED / "make_mlp.py"), str(work)], check=True, capture_output=True)
        upload = subprocess.run(
            [
                "curl",
                "-sf",
                "-F",
                "model_id=mlp",
                "-F",
                f"model=@{work / 'mlp.pt'}",
                "-F",
                "allow_remote_inference=true",
                f"{one_url}/serve-model",
            ],
            check=True,
            capture_output=True,
        )
        print(f"upload: {upload.stdout.decode()[:80]}")
        body = work / "grid_infer.json"
        for url in (one_url, two_url):
            load(f"{url}/model/mlp", body, 50, 500)  # warm-up: every replica fetches and loads the model
        results: dict[str, list[dict]] = {"one": [], "two": []}
        groups = {"replica a": processes[0].pid, "replica b": processes[1].pid, "nginx": 0}
        cpu: dict[str, dict[str, float]] = {"one": {}, "two": {}}
        for round_number in range(1, rounds + 1):
            for label, url in (("one", one_url), ("two", two_url)):
                groups["nginx"] = (one if label == "one" else two).pid
                before = cpu_seconds(groups)
                started = time.monotonic()
                figures = load(f"{url}/model/mlp", body, concurrency, requests)
                seconds = time.monotonic() - started
                used = cpu_seconds(groups)
                for name in used:  # cores busy on average during the round
                    spent = used[name] - before.get(name, 0.0)
                    cpu[label][name] = cpu[label].get(name, 0.0) + spent / seconds / rounds
                results[label].append(figures)
                print(
                    f"round {round_number}: {label} replica(s) rps={figures['rps']:.0f} p50_ms={figures['p50_ms']:.0f} "
                    f"p99_ms={figures['p99_ms']:.0f} failed={figures['failed']:.0f} non2xx={figures['non2xx']:.0f}"
                )
        spread: dict[str, int] = {}
        for line in (work / "run-two" / "nginx-access.log").read_text().splitlines():
            upstream = line.rsplit("upstream=", 1)[-1]
            spread[upstream] = spread.get(upstream, 0) + 1
        one_rps = statistics.median(r["rps"] for r in results["one"])
        two_rps = statistics.median(r["rps"] for r in results["two"])
        print(f"nginx with two replicas sent: {spread}")
        for label in ("one", "two"):
            busy = ", ".join(f"{name} {cores:.2f}" for name, cores in cpu[label].items())
            print(f"cores busy on average through the {label}-replica nginx (of {os.cpu_count()}): {busy}")
        print(
            f"replicas: concurrency={concurrency} one_replica_rps={one_rps:.0f} two_replicas_rps={two_rps:.0f} "
            f"ratio={two_rps / one_rps:.2f} cores={os.cpu_count()}"
        )
    finally:
        for process in reversed(processes):
            try:
                os.killpg(process.pid, 15)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        store.stop()
        subprocess.run([*PSQL, f"DROP DATABASE IF EXISTS {db}"], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:4]]
    main(*(arguments + [3000, 3, 8][len(arguments) :]))
