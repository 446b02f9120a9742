"""Limits: every one answers a JSON 413/400 (411 for a body without length), and none reads a body it
refuses into memory first: the declared length is checked before reading, and a multipart file part
is stopped once it passes its endpoint's limit instead of being written whole."""

import base64
import io
import json
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection

from datasets_app.models import Dataset
from gridnode.uploads import CHUNK_SIZE
from models_app.models import HostedModel
from tests.conftest import saved_tensor
from tests.reliability.helpers import (
    files_in,
    json_of,
    multipart,
    post_head,
    raw_exchange,
    status_of,
)
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db(transaction=True)

ROW = [0.5, -1.0, 2.0, 0.25]


def nothing_stored(data_dir) -> bool:
    return (
        not HostedModel.objects.exists()
        and not Dataset.objects.exists()
        and files_in(data_dir / "files") == []
        and files_in(data_dir / "tmp") == []
    )


class MeteredInput:
    """A wsgi.input over `body` that counts what the application reads from it."""

    def __init__(self, body: bytes):
        self._body = io.BytesIO(body)
        self.read_bytes = 0

    def read(self, size=-1):
        data = self._body.read(size)
        self.read_bytes += len(data)
        return data

    def readline(self, size=-1):
        data = self._body.readline(size)
        self.read_bytes += len(data)
        return data


def call_node(path: str, body: bytes, content_type: str, *, length: int | None = None, **environ):
    """One request through the production WSGI application: (status, JSON answer, bytes read of the body)."""
    from gridnode.wsgi import application

    stream = MeteredInput(body)
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body) if length is None else length),
        "wsgi.input": stream,
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        **environ,
    }
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["type"] = dict(headers).get("Content-Type")

    chunks = application(env, start_response)
    try:
        content = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    assert answer["type"] == "application/json"
    return answer["status"], json.loads(content), stream.read_bytes


@pytest.fixture
def mlp(serve, mlp_jit):
    serve("mlp", mlp_jit, allow_remote_inference=True)
    return "mlp"


# --- the inference batch size ---------------------------------------------------------------------------------


def test_the_batch_limit_is_1024_rows_by_default_and_a_bad_value_stops_start_up(tmp_path):
    assert django_settings.GRIDNODE_MAX_INFERENCE_BATCH == 1024
    env = {**os.environ, "GRIDNODE_DATA_DIR": str(tmp_path), "GRIDNODE_MAX_INFERENCE_BATCH": "0"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "GRIDNODE_MAX_INFERENCE_BATCH must be at least 1, not 0." in result.stderr


def test_json_inference_over_the_batch_limit_is_400_naming_it(api, settings, mlp):
    settings.GRIDNODE_MAX_INFERENCE_BATCH = 3

    response = api.post("/model/mlp", {"data": [ROW] * 4}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "status": False,
        "error": "'data' has 4 rows, over this node's batch size limit of 3 rows per inference.",
    }
    assert api.post("/model/mlp", {"data": [ROW] * 3}, format="json").status_code == 200


def test_serialized_inference_over_the_batch_limit_is_400(api, settings, mlp):
    settings.GRIDNODE_MAX_INFERENCE_BATCH = 3
    body = {"encoding": "base64", "data": base64.b64encode(saved_tensor([ROW] * 4)).decode()}

    response = api.post("/model/mlp", body, format="json")

    assert response.status_code == 400
    assert "batch size limit of 3 rows" in response.json()["error"]


def test_every_input_of_a_model_with_several_is_held_to_the_limit(api, settings, serve, two_input_jit):
    settings.GRIDNODE_MAX_INFERENCE_BATCH = 3
    serve("pair", two_input_jit, allow_remote_inference=True)

    response = api.post("/model/pair", {"data": [[1, 2, 3], [1, 2, 3, 4]]}, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == (
        "Input 1 of 'data' has 4 rows, over this node's batch size limit of 3 rows per inference."
    )


def test_the_fast_path_leaves_a_batch_over_the_limit_to_django_which_refuses_it(settings, mlp):
    settings.GRIDNODE_MAX_INFERENCE_BATCH = 3

    status, answer, _ = call_node("/model/mlp", json.dumps({"data": [ROW] * 4}).encode(), "application/json")
    assert status == 400
    assert "batch size limit of 3 rows" in answer["error"]

    status, answer, _ = call_node("/model/mlp", json.dumps({"data": [ROW] * 3}).encode(), "application/json")
    assert status == 200
    assert len(answer["prediction"]) == 3


def test_v2_inference_over_the_batch_limit_is_400_before_the_tensor_is_built(api, settings, mlp):
    settings.GRIDNODE_MAX_INFERENCE_BATCH = 3
    rows = 1_000_000  # declared, not sent: the shape alone is refused
    body = {"inputs": [{"name": "input__0", "shape": [rows, 4], "datatype": "FP32", "data": ROW}]}

    response = api.post("/v2/models/mlp/infer", body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": f"Input input__0 has {rows} rows, over this node's batch size limit of 3 rows per inference."
    }
    within = {"inputs": [{"name": "input__0", "shape": [3, 4], "datatype": "FP32", "data": ROW * 3}]}
    assert api.post("/v2/models/mlp/infer", within, format="json").status_code == 200


# --- bodies refused from their declared length ----------------------------------------------------------------

HUGE = 10**12  # a terabyte declared; none of it is ever sent


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/serve-model", "application/json"),
        ("/serve-model", "application/x-www-form-urlencoded"),
        ("/serve-model", "multipart/form-data; boundary=x"),
        ("/model/mlp", "application/json"),
        ("/model/mlp", "multipart/form-data; boundary=x"),
        ("/v2/models/mlp/infer", "application/json"),
        ("/datasets", "application/json"),
        ("/datasets", "multipart/form-data; boundary=x"),
        ("/search", "application/json"),
        ("/delete-model", "application/json"),
    ],
)
def test_a_body_declared_over_its_limit_is_413_without_reading_a_byte(mlp, data_dir, path, content_type):
    status, answer, read = call_node(path, b"", content_type, length=HUGE)

    assert status == 413
    assert "larger than this node accepts" in answer["error"]
    assert read == 0
    assert HostedModel.objects.count() == 1  # only the fixture's


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
def test_a_live_node_answers_413_while_the_declared_body_has_not_arrived(live_node, data_dir, content_type):
    # Ten bytes of a terabyte: a node that waited for (or buffered) the body would never answer.
    started = time.monotonic()
    answer = raw_exchange(live_node, post_head("/serve-model", content_type, HUGE), b"0123456789", timeout=60)
    seconds = time.monotonic() - started

    assert status_of(answer) == 413, answer
    assert "larger than this node accepts" in json_of(answer)["error"]
    print(f"413 for a declared terabyte after {seconds * 1000:.0f} ms")
    assert nothing_stored(data_dir)


# --- multipart file parts stopped at their endpoint's limit ---------------------------------------------------


def oversized_part(field: str, size: int, **fields: str) -> tuple[bytes, str]:
    return multipart(fields, {field: b"\0" * size})


@pytest.mark.parametrize(
    ("path", "field", "fields", "setting", "error"),
    [
        ("/serve-model", "model", {"model_id": "big"}, "GRIDNODE_MAX_MODEL_BYTES", "The model is larger"),
        ("/datasets", "data", {"id": "big"}, "GRIDNODE_MAX_DATASET_BYTES", "The dataset is larger"),
        ("/model/mlp", "data", {}, "GRIDNODE_MAX_BODY_BYTES", "The inference data is larger"),
    ],
)
def test_a_file_part_over_its_limit_is_stopped_while_it_arrives(
    settings, mlp, data_dir, path, field, fields, setting, error
):
    limit = 2 * CHUNK_SIZE
    setattr(settings, setting, limit)
    body, content_type = oversized_part(field, 16 * CHUNK_SIZE, **fields)  # within the upload limit

    status, answer, read = call_node(path, body, content_type)

    assert status == 413
    assert answer["error"].startswith(error)
    assert answer["error"].endswith(f"({limit} bytes).")
    # The parser reads a chunk at a time: the part stops within a chunk or two of its limit.
    print(f"{path}: {read:,} of {len(body):,} bytes read")
    assert read <= limit + 2 * CHUNK_SIZE < len(body)
    assert files_in(data_dir / "tmp") == []  # the half-written part is gone with the answer
    assert HostedModel.objects.count() == 1
    assert not Dataset.objects.exists()


def test_a_small_file_part_over_its_limit_is_413_from_memory_too(settings, data_dir, mlp, mlp_jit):
    settings.GRIDNODE_MAX_MODEL_BYTES = 1024  # the whole body fits FILE_UPLOAD_MAX_MEMORY_SIZE
    # The id is taken: a 409 would mean the view got the part and looked further.
    body, content_type = multipart({"model_id": mlp}, {"model": mlp_jit})

    status, answer, _ = call_node("/serve-model", body, content_type)

    assert status == 413
    assert answer == {"success": False, "error": "The model is larger than this node accepts (1024 bytes)."}
    assert files_in(data_dir / "tmp") == []


def test_a_live_node_answers_413_before_an_oversized_part_has_arrived(live_node, settings, data_dir):
    settings.GRIDNODE_MAX_MODEL_BYTES = CHUNK_SIZE
    body, content_type = oversized_part("model", 64 * CHUNK_SIZE, model_id="big")
    sent = 4 * CHUNK_SIZE  # the rest of the 64 MiB part is never sent

    answer = raw_exchange(live_node, post_head("/serve-model", content_type, len(body)), body[:sent], timeout=60)

    assert status_of(answer) == 413, answer
    assert json_of(answer) == {
        "success": False,
        "error": f"The model is larger than this node accepts ({CHUNK_SIZE} bytes).",
    }
    assert nothing_stored(data_dir)


def test_a_part_within_its_limit_is_still_stored(settings, data_dir, mlp_jit):
    settings.GRIDNODE_MAX_MODEL_BYTES = len(mlp_jit)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # through the staging folder
    body, content_type = multipart({"model_id": "exact"}, {"model": mlp_jit})

    status, answer, _ = call_node("/serve-model", body, content_type)

    assert status == 200, answer
    assert HostedModel.objects.get().size == len(mlp_jit)
    assert files_in(data_dir / "tmp") == []


# --- bodies without a Content-Length --------------------------------------------------------------------------


def test_a_chunked_body_is_411_and_never_read(mlp, data_dir):
    status, answer, read = call_node(
        "/serve-model", b'{"model_id": "c"}', "application/json", length=0, HTTP_TRANSFER_ENCODING="chunked"
    )

    assert status == 411
    assert answer == {"error": "Send the request body with a Content-Length header (chunked bodies are not read)."}
    assert read == 0


def test_the_411_carries_the_security_headers_of_djangos_answers():
    from gridnode.wsgi import application

    status, headers, _ = call_wsgi(application, "POST", "/serve-model", b"", headers={"Transfer-Encoding": "chunked"})

    assert status == 411
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


def test_gunicorn_passes_chunked_bodies_to_the_node_which_answers_411(node_processes, data_dir, tmp_path, mlp_jit):
    # The node answers before touching a database, so on SQLite the process gets a database of its own.
    own = {} if connection.vendor == "postgresql" else {"DATABASE_URL": f"sqlite:///{tmp_path / 'own.sqlite3'}"}
    node = node_processes(**own)
    body, content_type = multipart({"model_id": "chunked"}, {"model": mlp_jit})
    head = (
        f"POST /serve-model HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()

    answer = raw_exchange(node.url, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    assert status_of(answer) == 411, answer
    assert json_of(answer)["error"].startswith("Send the request body with a Content-Length header")
    assert nothing_stored(data_dir)
