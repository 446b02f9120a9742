"""Latency of POST /search and GET /dataset-tags over 100,000 tagged datasets on PostgreSQL.

usage: .venv/bin/python bench/datasets_search.py [--datasets 100000] [--requests 300] [--no-http] [--keep]
       [--server postgres://postgres@127.0.0.1:5432]

What it does, and what it does not:
- Creates its own database, `gridnode_bench_datasets`, on the server given (dropping a previous one of
  that name only) and migrates it, trigram index included; it drops the database (and its temp folder
  of files) at the end unless `--keep`. No other database is touched.
- Seeds N datasets (default 100,000) with 5 distinct tags each drawn uniformly from 1,000 tags
  (`#tag-0000` ... `#tag-0999`) and a generated description of a few words, with bulk inserts through
  the ORM. The rows are real `Dataset` rows, but to keep seeding fast they all point at ONE tiny stored
  tensor file (a 1-element float32 tensor) with its real size and sha256, so these rows are fit for
  benchmarking search and listing, not downloads. Upload and download speed are not measured here.
- Measures sequential (one client, no concurrency) request latency, reported as p50/p99 in ms:
  1. in-process, through Django's test client: the full middleware, URL, DRF view, service and
     PostgreSQL query path, without a network socket or HTTP server;
  2. over real HTTP (unless `--no-http`): the script starts gunicorn (1 gthread worker) on a free
     local port against the same database and sends requests over one kept-alive http.client
     connection.
  The seeded tables are VACUUM ANALYZEd first, as autovacuum would soon do; 50 warm-up requests
  of each endpoint precede the measurements.
  The /search mix has equal shares of: one tag (hit), two tags of one dataset (hit), two random tags
  (mostly a miss), an unknown tag (miss), a description word (hit), a description substring that
  occurs nowhere (miss), a dataset id (hit), a tag and a description word together, and the two
  worst cases of the design: a two-letter substring that occurs nowhere (too short for the trigram
  index, so a scan) and a word found in every description (all 100,000 matches are collected).
"""

import argparse
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DB = "gridnode_bench_datasets"
ROOT = Path(__file__).resolve().parents[1]
# Description words: each is in about 1 in 10 descriptions ("batch" is in all of them).
ADJECTIVES = ["thermal", "noisy", "labelled", "raw", "clean", "hourly", "daily", "synthetic", "scanned", "sparse"]
NOUNS = ["images", "readings", "spectra", "records", "frames", "samples", "scans", "signals", "traces", "logs"]
PLACES = ["harbour", "forest", "clinic", "station", "orchard", "tunnel", "glacier", "market", "lab", "bridge"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=100_000)
    parser.add_argument("--tags", type=int, default=1_000)
    parser.add_argument("--tags-per-dataset", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="requests per /search query kind and for tags")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--no-http", action="store_true", help="skip the gunicorn (real HTTP) measurement")
    parser.add_argument("--keep", action="store_true", help=f"leave the {BENCH_DB} database in place")
    options = parser.parse_args()

    server = urlsplit(options.server)
    database_url = urlunsplit(server._replace(path=f"/{BENCH_DB}"))
    recreate_database(options.server)
    data_dir = tempfile.mkdtemp(prefix="gridnode-bench-datasets-")
    os.environ.update(
        DATABASE_URL=database_url,
        GRIDNODE_DATA_DIR=data_dir,
        DJANGO_SETTINGS_MODULE="gridnode.settings",
        SECRET_KEY="bench-only",
        # One log line per request would be measured too, and bury the figures.
        GRIDNODE_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    try:
        run(options, database_url, data_dir)
    finally:
        from django.db import connections

        connections.close_all()
        if options.keep:
            print(f"kept: database {BENCH_DB}, files and gunicorn.log in {data_dir}")
        else:
            drop_database(options.server)
            shutil.rmtree(data_dir, ignore_errors=True)


def admin_connection(server_url: str):
    import psycopg2

    server = urlsplit(server_url)
    connection = psycopg2.connect(
        host=server.hostname,
        port=server.port or 5432,
        user=server.username or "postgres",
        password=server.password,
        dbname="postgres",
    )
    connection.autocommit = True
    return connection


def recreate_database(server_url: str) -> None:
    connection = admin_connection(server_url)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        cursor.execute(f"CREATE DATABASE {BENCH_DB}")
    connection.close()


def drop_database(server_url: str) -> None:
    connection = admin_connection(server_url)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    connection.close()


def run(options, database_url: str, data_dir: str) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    tags_of = seed(options.datasets, options.tags, options.tags_per_dataset)
    print(
        f"seeded {options.datasets} datasets x {options.tags_per_dataset} tags from {options.tags} tags "
        f"in {time.perf_counter() - started:.1f} s ({BENCH_DB})"
    )
    rng = random.Random(7)
    queries = search_queries(rng, tags_of, options.tags, options.requests)
    check_answers(queries)

    from django.test import Client

    client = Client()

    def in_process(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        response = client.get(path) if method == "GET" else client.post(path, body, content_type="application/json")
        return response.status_code, response.content

    report("in-process (Django test client)", in_process, queries, options.requests)
    if not options.no_http:
        with gunicorn(database_url, data_dir) as port:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            reconnects: list[str] = []

            def over_http(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                except (ConnectionError, http.client.RemoteDisconnected):
                    # The server closed the kept-alive connection: open a new one and count the request.
                    reconnects.append(path)
                    connection.close()
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                return response.status, response.read()

            report("HTTP (gunicorn, 1 gthread worker, keep-alive)", over_http, queries, options.requests)
            connection.close()
            print(f"  (connections reopened after a server-side close: {len(reconnects)})")


def seed(count: int, tag_count: int, per_dataset: int) -> list[list[int]]:
    """Bulk-insert the tags, datasets and links; returns each dataset's tag numbers."""
    import torch
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.db import connection

    from datasets_app.models import Dataset, Tag

    buffer = io.BytesIO()
    torch.save(torch.zeros(1), buffer)
    raw = buffer.getvalue()
    shared_file = default_storage.save("datasets/bench-shared.pt", ContentFile(raw))
    sha256 = hashlib.sha256(raw).hexdigest()

    tags = Tag.objects.bulk_create([Tag(name=f"#tag-{number:04d}") for number in range(tag_count)])
    tag_pk = [tag.pk for tag in tags]
    rng = random.Random(42)
    tags_of: list[list[int]] = []
    Tagging = Dataset.tags.through
    batch = 10_000
    for start in range(0, count, batch):
        rows = []
        for number in range(start, min(start + batch, count)):
            description = (
                f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} from the {rng.choice(PLACES)} site, batch {number}"
            )
            rows.append(
                Dataset(
                    dataset_id=f"ds-{number:06d}",
                    description=description,
                    shape=[1],
                    dtype="float32",
                    data=shared_file,
                    size=len(raw),
                    sha256=sha256,
                )
            )
        created = Dataset.objects.bulk_create(rows)
        links = []
        for dataset in created:
            chosen = rng.sample(range(tag_count), per_dataset)
            tags_of.append(chosen)
            links.extend(Tagging(dataset_id=dataset.pk, tag_id=tag_pk[number]) for number in chosen)
        Tagging.objects.bulk_create(links)
    with connection.cursor() as cursor:
        # What autovacuum would soon do to a table this size: statistics, hint bits, visibility map.
        cursor.execute("VACUUM ANALYZE")
    return tags_of


def search_queries(rng: random.Random, tags_of: list[list[int]], tag_count: int, per_kind: int) -> dict:
    """The /search bodies of each query kind, with the answer each must get (None: either)."""

    def tag(number: int) -> str:
        return f"#tag-{number:04d}"

    def dataset_number() -> int:
        return rng.randrange(len(tags_of))

    kinds = {
        "one tag (hit)": lambda: ([tag(rng.randrange(tag_count))], None),
        "two tags of one dataset (hit)": lambda: ([tag(n) for n in rng.sample(tags_of[dataset_number()], 2)], True),
        "two random tags": lambda: ([tag(n) for n in rng.sample(range(tag_count), 2)], None),
        "unknown tag (miss)": lambda: ([f"#no-such-tag-{rng.randrange(10**6)}"], False),
        "description word (hit)": lambda: ([rng.choice(NOUNS + PLACES)], True),
        "description substring (miss)": lambda: ([f"quasar {rng.randrange(10**6)}"], False),
        "dataset id (hit)": lambda: ([f"ds-{dataset_number():06d}"], True),
        "tag + description word": lambda: ([tag(rng.randrange(tag_count)), rng.choice(ADJECTIVES)], None),
        "2-letter substring (miss, scan)": lambda: (["zq"], False),
        "word in every description (hit)": lambda: (["batch"], True),
    }
    return {name: [make() for _ in range(per_kind)] for name, make in kinds.items()}


def check_answers(queries: dict) -> None:
    from datasets_app import services

    for name, cases in queries.items():
        for terms, expected in cases[:5]:
            found = services.datasets_search(terms=terms)
            assert expected is None or found is expected, (name, terms, found)


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def row(label: str, samples: list[float]) -> None:
    print(f"  {label:38} {len(samples):5} {percentile(samples, 0.5):8.2f} {percentile(samples, 0.99):8.2f}")


def report(title: str, send, queries: dict, tag_requests: int) -> None:
    print(f"\n{title}")
    for _ in range(50):  # warm connections, caches and the query planner
        send("POST", "/search", json.dumps({"query": ["#tag-0001"]}).encode())
        send("GET", "/dataset-tags", None)
    timings: dict[str, list[float]] = {}
    mixed = [(name, terms) for name, cases in queries.items() for terms, _ in cases]
    random.Random(3).shuffle(mixed)
    for name, terms in mixed:
        body = json.dumps({"query": terms}).encode()
        start = time.perf_counter()
        status, content = send("POST", "/search", body)
        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        assert status == 200, (status, content)
    tags_ms = []
    for _ in range(tag_requests):
        start = time.perf_counter()
        status, content = send("GET", "/dataset-tags", None)
        tags_ms.append((time.perf_counter() - start) * 1000)
        assert status == 200
    every = [ms for samples in timings.values() for ms in samples]
    print(f"  {'endpoint / query kind':38} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    row("POST /search, all kinds mixed", every)
    for name, samples in timings.items():
        row(f"  {name}", samples)
    row(f"GET /dataset-tags ({len(json.loads(content))} tags)", tags_ms)
    print(f"  (mean of the mixed /search: {statistics.fmean(every):.2f} ms)")


class gunicorn:
    """A gunicorn process serving the node on a free local port, stopped on exit."""

    def __init__(self, database_url: str, data_dir: str):
        self.env = {**os.environ, "DATABASE_URL": database_url, "GRIDNODE_DATA_DIR": data_dir}

    def __enter__(self) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.log = open(Path(self.env["GRIDNODE_DATA_DIR"]) / "gunicorn.log", "w")  # noqa: SIM115 (closed on exit)
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "gridnode.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "1",
                "-k",
                "gthread",
                "--threads",
                "1",
                "--keep-alive",
                "60",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return port
            except OSError:
                time.sleep(0.2)
        self.process.kill()
        raise RuntimeError("gunicorn did not start")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


if __name__ == "__main__":
    main()
