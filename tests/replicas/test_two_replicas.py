"""Two replicas of one node behind nginx, sharing only PostgreSQL and the object store: what one stores the
other serves, what one deletes is gone on both, and losing one replica mid-traffic loses nothing stored
while the other goes on answering (tests/replicas/conftest.py)."""

import base64
import hashlib
import http.client
import io
import threading
import time

import pytest
import torch

from tests.reliability.helpers import multipart, post_json, post_multipart, request, scaled_mlp
from tests.replicas.conftest import NEEDS_POSTGRESQL

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_POSTGRESQL]

ROWS = [[1.0, 2.0], [-0.5, 4.0]]  # row sums 3 and 3.5


def serve(url: str, model_id: str, archive: bytes) -> None:
    fields = {"model_id": model_id, "allow_download": "true", "allow_remote_inference": "true"}
    status, answer = post_multipart(url, "/serve-model", fields, {"model": archive})
    assert status == 200, answer


def predict(url: str, model_id: str) -> tuple[int, object]:
    return post_json(url, f"/model/{model_id}", {"data": ROWS})


def download(url: str, model_id: str) -> tuple[int, object]:
    return request(url, "GET", f"/get_model/{model_id}", headers={"Accept": "application/octet-stream"})


def test_a_model_uploaded_through_one_replica_is_served_by_the_other_and_deleted_on_both(replicas, object_store):
    a, b = replicas.replicas
    archive = scaled_mlp(2.0)
    serve(a.url, "shared", archive)

    # b has never seen it: it fetches the archive from the store into its own data folder, checked.
    assert predict(b.url, "shared") == (200, {"success": True, "status": True, "prediction": [[6.0], [7.0]]})
    assert download(b.url, "shared") == (200, archive)
    sha256 = hashlib.sha256(archive).hexdigest()
    assert [name[:64] for name in b.copies()] == [sha256]
    assert a.copies() == []  # a stored it and never ran it: no copy of its own
    for _ in range(6):  # through nginx, whichever replica takes it
        assert predict(replicas.url, "shared")[0] == 200
    assert len(replicas.served_by()) == 2

    assert post_json(b.url, "/delete-model", {"model_id": "shared"})[0] == 200
    for replica in (a, b):
        assert predict(replica.url, "shared")[0] == 404
        assert download(replica.url, "shared")[0] == 404
        assert request(replica.url, "GET", "/models")[1] == {"success": True, "models": []}
    assert object_store.keys(replicas.prefix) == []
    assert b.copies() == []  # the replica that deleted it dropped its copy at once

    # A copy another replica keeps of a deleted model is never served (its name is never reused) and
    # storage_check on that replica removes it.
    serve(b.url, "again", scaled_mlp(3.0))
    assert predict(a.url, "again")[1]["prediction"] == [[9.0], [10.5]]
    assert post_json(b.url, "/delete-model", {"model_id": "again"})[0] == 200
    assert len(a.copies()) == 2  # of "shared" (a ran it for nginx) and of "again"
    checked = replicas.manage(a, "storage_check", "--min-age", "0", "--delete")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 local copies of files no row refers to removed" in checked.stdout
    assert a.copies() == []


def test_a_dataset_uploaded_through_one_replica_is_served_by_the_other_and_deleted_on_both(replicas, object_store):
    a, b = replicas.replicas
    body = {"id": "points", "tags": ["#shared"], "data": [[1.0, 2.0], [3.0, 4.0]], "allow_download": True}
    assert post_json(a.url, "/datasets", body)[0] == 201

    status, answer = request(b.url, "GET", "/datasets/points/data?format=json")
    assert (status, answer["data"]) == (200, [[1.0, 2.0], [3.0, 4.0]])
    assert request(b.url, "GET", "/datasets/points")[0] == 200
    assert len(object_store.keys(replicas.prefix)) == 1

    assert request(b.url, "DELETE", "/datasets/points")[0] == 204
    for replica in (a, b):
        assert request(replica.url, "GET", "/datasets/points/data")[0] == 404
    assert object_store.keys(replicas.prefix) == []


def test_losing_a_replica_mid_traffic_loses_nothing_stored_and_the_other_keeps_answering(replicas, object_store):
    a, b = replicas.replicas
    serve(replicas.url, "steady", scaled_mlp(2.0))
    for replica in (a, b):  # each has its inference processes started and the model loaded
        assert predict(replica.url, "steady")[0] == 200
    uploaded: dict[str, bytes] = {}  # dataset id -> its torch.save bytes, for every upload answered 201
    refused: list[str] = []  # uploads the node answered with an error: none may have left a row
    # Uploads whose answer was lost with replica a (the connection cut, or nginx's 502 for it): a may have
    # stored one before it died, and then it must read back whole.
    unanswered: dict[str, list[list[float]]] = {}
    outcomes: list[tuple[float, str, int]] = []  # (when, what, status) of every request
    lock = threading.Lock()
    stop = threading.Event()

    def record(what: str, status: int) -> None:
        with lock:
            outcomes.append((time.monotonic(), what, status))

    def infer_loop() -> None:
        while not stop.is_set():
            try:
                status = predict(replicas.url, "steady")[0]
            except (OSError, http.client.HTTPException):  # cut by the replica's death
                status = 0
            record("inference", status)

    def upload_loop(worker: int) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            dataset_id = f"d{worker}-{count}"
            body = {"id": dataset_id, "data": [[float(worker), float(count)]], "allow_download": True}
            try:
                status, _ = post_json(replicas.url, "/datasets", body)
            except (OSError, http.client.HTTPException):  # cut by the replica's death
                status = 0
            record("upload", status)
            if status == 201:
                raw = request(replicas.url, "GET", f"/datasets/{dataset_id}/data?encoding=base64")[1]
                uploaded[dataset_id] = base64.b64decode(raw["data"])
            elif status in (0, 502):
                unanswered[dataset_id] = body["data"]
            else:
                refused.append(dataset_id)

    threads = [threading.Thread(target=infer_loop) for _ in range(4)]
    threads += [threading.Thread(target=upload_loop, args=(worker,)) for worker in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    spread_before = replicas.served_by()
    killed_at = time.monotonic()
    a.kill()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    before = [status for when, _, status in outcomes if when < killed_at]
    after = [(when, status) for when, _, status in outcomes if when >= killed_at]
    failed_after = [status for _, status in after if status not in (200, 201)]
    # Only requests that a was holding when it died may fail (nginx sends a request that reached a replica
    # nowhere else); everything after them is answered by b.
    settled = [status for when, status in after if when > killed_at + 1.0]
    print(
        f"\nreplicas: {len(outcomes)} requests, {len(before)} before the kill (failed "
        f"{sum(s not in (200, 201) for s in before)}), {len(after)} after (failed {len(failed_after)}: "
        f"{sorted(set(failed_after))}), {len(uploaded)} datasets stored, {len(refused)} uploads refused, "
        f"{len(unanswered)} unanswered; "
        f"nginx upstreams before the kill {spread_before}, in all {replicas.served_by()}"
    )
    assert all(status in (200, 201) for status in before)
    assert len(failed_after) <= 8  # at most what a held: 2 workers x 4 threads
    assert settled
    assert all(status in (200, 201) for status in settled)

    # Nothing stored is lost: every dataset answered 201 reads back whole from the survivor; every refused
    # upload left no row.
    for dataset_id, raw in uploaded.items():
        status, answer = request(b.url, "GET", f"/datasets/{dataset_id}/data?encoding=base64")
        assert status == 200, dataset_id
        assert base64.b64decode(answer["data"]) == raw, dataset_id
    for dataset_id in refused:
        assert request(b.url, "GET", f"/datasets/{dataset_id}")[0] == 404, dataset_id
    for dataset_id, data in unanswered.items():
        status, answer = request(b.url, "GET", f"/datasets/{dataset_id}/data?encoding=base64")
        if status != 404:
            assert status == 200, dataset_id
            tensor = torch.load(io.BytesIO(base64.b64decode(answer["data"])), weights_only=True)
            assert tensor.tolist() == data, dataset_id
    stored = {key for key in object_store.keys(replicas.prefix) if "/datasets/" in f"/{key}"}
    assert len(stored) >= len(uploaded)  # an upload a held when it died may have left an orphan object
    checked = replicas.manage(b, "storage_check", "--min-age", "0", "--delete")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert " 0 rows without their file" in checked.stdout
    assert predict(replicas.url, "steady")[0] == 200


def test_a_cut_upload_through_nginx_leaves_no_object_and_no_row(replicas, object_store):
    import socket
    from urllib.parse import urlsplit

    body, content_type = multipart({"model_id": "cut", "allow_download": "true"}, {"model": scaled_mlp(1.0) * 4})
    head = (
        f"POST /serve-model HTTP/1.1\r\nHost: node\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    for url in (replicas.url, replicas.replicas[0].url):  # through nginx, and straight to a replica's gunicorn
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(head + body[: len(body) // 2])
    time.sleep(1)  # the replica notices the closed connection and ends the request
    for replica in replicas.replicas:
        assert request(replica.url, "GET", "/models")[1] == {"success": True, "models": []}
    assert object_store.keys(replicas.prefix) == []
    assert object_store.pending_uploads(replicas.prefix) == []


def test_scripts_serve_is_the_proxy_of_several_replicas(replicas):
    """scripts/serve with GRIDNODE_UPSTREAMS runs nginx alone in front of the replicas, and stops on SIGTERM."""
    import os
    import signal
    import subprocess

    from tests.production.stack import free_port, healthz_status
    from tests.servers import REPO

    bind = f"127.0.0.1:{free_port()}"
    env = {
        **replicas.environment,
        "GRIDNODE_DATA_DIR": str(replicas.root / "serve-proxy"),
        "GRIDNODE_RUN_DIR": str(replicas.root / "serve-run"),
        "GRIDNODE_PUBLIC_BIND": bind,
        "GRIDNODE_UPSTREAMS": " ".join(replica.url.removeprefix("http://") for replica in replicas.replicas),
    }
    log = replicas.root / "serve.log"
    with open(log, "wb") as output:
        proxy = subprocess.Popen(
            ["./scripts/serve"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://{bind}"
        deadline = time.monotonic() + 180
        while True:
            assert proxy.poll() is None, log.read_text()
            try:
                if healthz_status(url, timeout=1) == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        serve(url, "proxied", scaled_mlp(2.0))
        assert predict(url, "proxied")[1]["prediction"] == [[6.0], [7.0]]
    finally:
        if proxy.poll() is None:
            os.killpg(proxy.pid, signal.SIGTERM)
        code = proxy.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "proxying" in log.read_text()
    assert not (replicas.root / "serve-proxy" / "gridnode.sqlite3").exists()  # it never migrated a database
