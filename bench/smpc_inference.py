"""Encrypted inference latency and accuracy on three local nodes (two workers and a crypto provider).

usage: python bench/smpc_inference.py [REQUESTS=1000]      (BENCH_TLS=0: plain http between everyone;
       BENCH_BROKER=redis://127.0.0.1:6379/0: the round messages through that Redis, GRIDNODE_BROKER_URL)

Starts three gunicorn nodes, each on a fresh PostgreSQL database (on the server of $DATABASE_URL, else
postgres://postgres@127.0.0.1:5432) and its own data folder, each with its own key pair and trusting
the other two by key, serving https with certificates from a CA made for the run (the nodes and this
client check them), every node-to-node request and reply signed; hosts a 784-128-128-10 MLP with
gridclient.encrypted, and runs REQUESTS single-input inferences one after another, each end to end
(sharing the input, both workers' HTTP calls, reconstructing). Every output is compared with the
plaintext model's. The nodes and their databases are removed at the end. The last line reads:

    smpc_mlp tls=on broker=socket p50_ms=... p99_ms=... max_abs_err=... argmax_agree=N/REQUESTS rounds=...
        bytes_per_worker=...      (one line; broker=redis with BENCH_BROKER)

bytes_per_worker is the mean, over requests and the two workers, of what a worker sent and received
(the client's share, the provider's randomness, the exchanges with its peer, its answer), in bytes.
Before it, a line gives throughput and latency with 4 clients at once (200 inferences).
"""

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gridclient.encrypted import host_encrypted_model, run_encrypted_inference  # noqa: E402
from tests.smpc_app.live_nodes import SmpcCluster  # noqa: E402

WARM_UP = 20
CONCURRENT_CLIENTS = 4
CONCURRENT_REQUESTS = 200


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_concurrently(workers: list[str]) -> str:
    """Throughput and latency with several clients at once (each node runs 2 processes of 4 threads)."""
    latencies: list[float] = []

    def one(_):
        started = time.perf_counter()
        run_encrypted_inference("bench-mlp", torch.rand(1, 784), workers=workers)
        latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        list(pool.map(one, range(CONCURRENT_REQUESTS)))
    elapsed = time.perf_counter() - started
    return (
        f"{CONCURRENT_CLIENTS} clients at once: {CONCURRENT_REQUESTS / elapsed:.1f} inferences/s, "
        f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms"
    )


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith(("postgres://", "postgresql://")):
        server = "postgres://postgres@127.0.0.1:5432/postgres"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    tls = os.environ.get("BENCH_TLS", "1") != "0"
    broker = os.environ.get("BENCH_BROKER", "")
    with tempfile.TemporaryDirectory(prefix="smpc-bench-") as root:
        cluster = SmpcCluster(Path(root), postgres_url=server, tls=tls, environment={"GRIDNODE_BROKER_URL": broker})
        if tls:
            os.environ["SSL_CERT_FILE"] = str(cluster.ca_file)  # this client checks the nodes' certificates too
        try:
            started = time.perf_counter()
            cluster.start()
            print(f"three nodes serving in {time.perf_counter() - started:.1f} s: {', '.join(cluster.urls)}")
            worker0, worker1, provider = cluster.urls
            started = time.perf_counter()
            host_encrypted_model(
                model,
                (784,),
                "bench-mlp",
                workers=[worker0, worker1],
                crypto_provider=provider,
                allow_remote_inference=True,
            )
            print(f"hosted the MLP's shares in {(time.perf_counter() - started) * 1000:.0f} ms")
            workers = [worker0, worker1]
            for _ in range(WARM_UP):
                run_encrypted_inference("bench-mlp", torch.rand(1, 784), workers=workers)
            latencies, errors, agree, traffic, rounds = [], [], 0, [], set()
            for _ in range(requests):
                inputs = torch.rand(1, 784)
                started = time.perf_counter()
                result = run_encrypted_inference("bench-mlp", inputs, workers=workers)
                latencies.append((time.perf_counter() - started) * 1000)
                with torch.no_grad():
                    expected = model(inputs).double()
                errors.append(float((result.output - expected).abs().max()))
                agree += int(torch.equal(result.output.argmax(dim=1), expected.argmax(dim=1)))
                traffic.extend(result.bytes_per_worker)
                rounds.add(result.rounds)
            concurrent = run_concurrently(workers)
        finally:
            cluster.stop()
    print(
        f"latency ms: mean {statistics.mean(latencies):.1f}, min {min(latencies):.1f}, "
        f"p90 {percentile(latencies, 0.9):.1f}, max {max(latencies):.1f}"
    )
    print(concurrent)
    print(
        f"smpc_mlp tls={'on' if tls else 'off'} broker={'redis' if broker else 'socket'} "
        f"p50_ms={percentile(latencies, 0.5):.1f} p99_ms={percentile(latencies, 0.99):.1f} "
        f"max_abs_err={max(errors):.2e} argmax_agree={agree}/{requests} rounds={'/'.join(map(str, sorted(rounds)))} "
        f"bytes_per_worker={round(statistics.mean(traffic))}"
    )


if __name__ == "__main__":
    main()
