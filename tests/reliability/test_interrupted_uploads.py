"""Nothing lost, nothing orphaned: a client that stops mid-upload leaves no row, no file and nothing
staged; a server killed mid-upload leaves no row, and the next server process serves everything
stored before."""

import base64
import io
import socket
import time
from urllib.parse import urlencode, urlsplit

import pytest
import torch
from django.core.management import call_command
from prometheus_client import REGISTRY

from datasets_app.models import Dataset
from models_app.models import HostedModel
from tests.conftest import plan_bytes, small_mlp
from tests.reliability.conftest import NEEDS_POSTGRESQL
from tests.reliability.helpers import (
    eventually_empty,
    files_in,
    json_of,
    multipart,
    post_head,
    post_json,
    post_multipart,
    receive_answer,
    request,
    saved,
    scaled_mlp,
    status_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


def with_last_field(body: bytes, content_type: str, field: bytes) -> bytes:
    """A multipart body with one more part (its headers and value) after the file parts."""
    boundary = b"--" + content_type.split("boundary=")[1].encode()
    return body.replace(boundary + b"--\r\n", boundary + b"\r\n" + field + boundary + b"--\r\n")


def cut_model_multipart(where: str) -> tuple[bytes, str, int, str]:
    """(body, content type, bytes the client sends before it stops, route) for an upload cut at `where`."""
    archive = scaled_mlp(2.0)
    body, content_type = multipart({"model_id": "cut"}, {"model": archive})
    # The flags come after the archive, as curl -F sends them when written last.
    tail_field = b'Content-Disposition: form-data; name="allow_remote_inference"\r\n\r\ntrue\r\n'
    body = with_last_field(body, content_type, tail_field)
    if where == "in the archive":
        return body, content_type, body.index(archive) + len(archive) // 2, "serve-model"
    # Past the archive and the boundary after it: Django alone would take the archive as whole.
    return body, content_type, body.index(tail_field) + 10, "serve-model"


def cut_model_form() -> tuple[bytes, str, int, str]:
    fields = {"model_id": "cut", "encoding": "base64", "model": base64.b64encode(scaled_mlp(2.0)).decode()}
    body = urlencode({**fields, "allow_remote_inference": "true"}).encode()
    return body, "application/x-www-form-urlencoded", body.index(b"&allow_remote_inference"), "serve-model"


def cut_dataset_multipart() -> tuple[bytes, str, int, str]:
    body, content_type = multipart({"id": "cut"}, {"data": saved(torch.ones(64, 64))})
    tail_field = b'Content-Disposition: form-data; name="tags"\r\n\r\n#late\r\n'
    body = with_last_field(body, content_type, tail_field)
    return body, content_type, body.index(tail_field), "datasets"


CUTS = {
    "multipart model, in the archive": lambda: cut_model_multipart("in the archive"),
    "multipart model, after the archive": lambda: cut_model_multipart("after the archive"),
    "form model, after the model field": cut_model_form,
    "multipart dataset, after the tensor": cut_dataset_multipart,
}


def answered(endpoint: str, status: int) -> float:
    labels = {"method": "POST", "endpoint": endpoint, "status": str(status)}
    return REGISTRY.get_sample_value("gridnode_http_requests_total", labels) or 0


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("goodbye", ["stops sending", "hangs up"])
def test_a_client_gone_mid_upload_leaves_no_row_no_file_nothing_staged(live_node, settings, data_dir, cut, goodbye):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every multipart part is staged on disk
    body, content_type, sent, endpoint = CUTS[cut]()
    path = "/datasets" if endpoint == "datasets" else "/serve-model"
    before = answered(endpoint, 400)
    parts = urlsplit(live_node)

    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(post_head(path, content_type, len(body)) + body[:sent])
        time.sleep(0.2)  # the node is waiting for the rest
        if goodbye == "stops sending":
            sock.shutdown(socket.SHUT_WR)
            answer = receive_answer(sock)
            assert status_of(answer) == 400, answer
            # The model endpoints add "success": false to every error.
            shape = {} if endpoint == "datasets" else {"success": False}
            assert json_of(answer) == {**shape, "error": "The request body ended before its Content-Length."}
    # Hung up: the node's answer goes nowhere; wait until it has been given.
    deadline = time.monotonic() + 10
    while answered(endpoint, 400) == before and time.monotonic() < deadline:
        time.sleep(0.02)

    assert answered(endpoint, 400) == before + 1
    assert not HostedModel.objects.exists()
    assert not Dataset.objects.exists()
    assert files_in(data_dir / "files") == []
    assert eventually_empty(data_dir / "tmp") == []


def test_the_whole_body_is_still_taken(live_node, settings, data_dir):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    body, content_type, _, _ = cut_model_multipart("after the archive")

    status, answer = request(live_node, "POST", "/serve-model", body, {"Content-Type": content_type})

    assert (status, answer) == (200, {"success": True, "message": "Model saved with id: cut"})
    assert HostedModel.objects.get().allow_remote_inference is True
    assert eventually_empty(data_dir / "tmp") == []


@NEEDS_POSTGRESQL
def test_a_server_killed_mid_upload_leaves_no_row_and_the_next_one_serves_everything(node_processes, data_dir, mlp_jit):
    first = node_processes()
    plan = plan_bytes(small_mlp(), (torch.rand(2, 4),))
    tensor = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    flags = {"allow_download": "true", "allow_remote_inference": "true"}
    assert post_multipart(first.url, "/serve-model", {"model_id": "jit", **flags}, {"model": mlp_jit})[0] == 200
    body = {"model_id": "plan", "encoding": "base64", "model": base64.b64encode(plan).decode()}
    assert post_json(first.url, "/serve-model", {**body, "allow_remote_inference": True})[0] == 200
    fields = {"id": "rows", "allow_download": "true", "tags": "#kept", "description": "survives"}
    assert post_multipart(first.url, "/datasets", fields, {"data": saved(tensor)})[0] == 201
    x = [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]
    predictions = {
        model_id: post_json(first.url, f"/model/{model_id}", {"data": x})[1]["prediction"]
        for model_id in ("jit", "plan")
    }

    # An upload the server is in the middle of writing to its staging folder when it dies.
    big, content_type = multipart({"model_id": "interrupted"}, {"model": b"\0" * (64 * 1024 * 1024)})
    parts = urlsplit(first.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(post_head("/serve-model", content_type, len(big)) + big[: 8 * 1024 * 1024])
        deadline = time.monotonic() + 20
        while not any(path.stat().st_size > 4 * 1024 * 1024 for path in (data_dir / "tmp").iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the staging folder"
            time.sleep(0.05)
        first.kill()

    assert sorted(HostedModel.objects.values_list("model_id", flat=True)) == ["jit", "plan"]
    left_behind = files_in(data_dir / "tmp")
    assert len(left_behind) == 1  # the dead process's half-written part: storage_check's to remove

    second = node_processes()
    assert request(second.url, "GET", "/models")[1] == {"success": True, "models": ["jit", "plan"]}
    for model_id, prediction in predictions.items():
        assert post_json(second.url, f"/model/{model_id}", {"data": x})[1]["prediction"] == prediction
    assert request(second.url, "GET", "/get_model/jit", headers={"Accept": "application/octet-stream"})[1] == mlp_jit
    status, answer = request(second.url, "GET", "/datasets/rows/data?format=json")
    assert (status, answer["data"]) == (200, tensor.tolist())
    status, answer = request(second.url, "GET", "/datasets/rows")
    assert (answer["tags"], answer["description"]) == (["#kept"], "survives")

    out = io.StringIO()
    call_command("storage_check", "--delete", "--min-age", "0", stdout=out)
    assert f"Stale staged upload {data_dir / 'tmp' / left_behind[0]}" in out.getvalue()
    assert files_in(data_dir / "tmp") == []
    assert "0 orphan files removed" in out.getvalue()
