"""PyGrid's real clients, replayed byte for byte, and their answers read the way their code read them.

- PyGrid's 2019 HTTP client (`grid/client.py`): `requests` with `json=` bodies holding archives and tensors as
  ISO-8859-1 text, models over 100 MB as a MultipartEncoder file part holding that text (so its UTF-8
  encoding) beside `encoding=ISO-8859-1`; every answer read as `r.encoding = "ISO-8859-1"; json.loads(r.text)`,
  and `result["success"]` looked at before `result["error"]`.
- PySyft 0.2.8-0.2.9's `DataCentricFLClient.serve_model`: a MultipartEncoder form to /data_centric/serve-model/.
- The grid gateway: `requests.post(url, data=json.dumps(body))`, a raw body with no Content-Type.
"""

import io
import json

import pytest
import requests
import torch
from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata

from tests.conftest import X, expected_mlp
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

NODE = "http://node.example:3000"
LATIN1 = "ISO-8859-1"


@pytest.fixture
def node():
    """The node's WSGI app as gunicorn runs it (the inference fast path in front of Django)."""
    from gridnode.wsgi import application

    return application


def send(app, prepared: requests.PreparedRequest):
    """(status, body) of a request exactly as `requests` prepared it: its body, Content-Type (or none)."""
    path, _, query = prepared.path_url.partition("?")
    content_type = prepared.headers.get("Content-Type")
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()

    def without_content_type(environ, start_response):
        environ["QUERY_STRING"] = query
        if content_type is None:
            del environ["CONTENT_TYPE"]
        return app(environ, start_response)

    status, _, content = call_wsgi(
        without_content_type, prepared.method, path, body, content_type=content_type or "", headers={}
    )
    return status, content


def read_2019(content: bytes) -> dict:
    """How the 2019 client read every answer: `r.encoding = "ISO-8859-1"`, then `json.loads(r.text)`."""
    return json.loads(content.decode(LATIN1))


def return_bool_result_2019(result: dict, return_key=None):
    """The 2019 client's `_return_bool_result`: `success` first, then `error` as its RuntimeError."""
    if result["success"]:
        return result[return_key] if return_key is not None else True
    elif result["error"]:
        raise RuntimeError(result["error"])


def serve_2019(app, archive: bytes, model_id: str, *, allow_download=True, allow_remote_inference=True):
    """The 2019 client's `serve_model` for a model under its size limit: a `json=` body."""
    serialized_model = archive.decode(LATIN1)
    data = {
        "model": serialized_model,
        "encoding": LATIN1,
        "model_id": model_id,
        "allow_download": str(allow_download),
        "allow_remote_inference": str(allow_remote_inference),
    }
    return send(app, requests.Request("POST", f"{NODE}/serve-model/", json=data).prepare())


def multipart(fields: list[tuple]) -> tuple[bytes, str]:
    """A form as requests_toolbelt's MultipartEncoder writes it (urllib3's fields, in order; text as UTF-8)."""
    parts = []
    for name, value in fields:
        if isinstance(value, tuple):
            filename, data, content_type = value
            field = RequestField(name=name, data=data, filename=filename)
            field.make_multipart(content_type=content_type)
        else:
            field = RequestField(name=name, data=value)
            field.make_multipart()
        parts.append(field)
    return encode_multipart_formdata(parts)


def post_form(app, path: str, fields: list[tuple]):
    body, content_type = multipart(fields)
    prepared = requests.Request("POST", f"{NODE}{path}", data=body, headers={"Content-Type": content_type}).prepare()
    return send(app, prepared)


def download_2019(app, model_id: str) -> bytes:
    """The 2019 client's `download_model`: `serialized_model` as latin-1 text back to bytes."""
    status, content = send(app, requests.Request("GET", f"{NODE}/get_model/{model_id}").prepare())
    assert status == 200, content
    return read_2019(content)["serialized_model"].encode(LATIN1)


# (a) Answers that carry latin-1 text are ASCII-escaped JSON.


def test_the_2019_client_downloads_the_exact_archive_it_served(node, mlp_jit):
    assert any(byte >= 0x80 for byte in mlp_jit)  # the bytes that raw UTF-8 corrupted for this client
    status, content = serve_2019(node, mlp_jit, "mlp")
    assert status == 200
    assert return_bool_result_2019(read_2019(content)) is True

    status, content = send(node, requests.Request("GET", f"{NODE}/get_model/mlp").prepare())
    assert status == 200
    assert content.isascii()
    assert "\\u00" in content.decode("ascii")
    assert read_2019(content)["serialized_model"].encode(LATIN1) == mlp_jit
    assert json.loads(content)["serialized_model"].encode(LATIN1) == mlp_jit  # and read as UTF-8 alike


@pytest.mark.parametrize("route", ["/models/mlp", "/model/mlp"])
def test_the_2019_client_runs_inference_on_serialized_data(node, mlp_jit, route):
    serve_2019(node, mlp_jit, "mlp")
    buffer = io.BytesIO()
    torch.save(torch.tensor(X), buffer)
    data = {"data": buffer.getvalue().decode(LATIN1), "encoding": LATIN1}
    prepared = requests.Request("POST", f"{NODE}{route}", json=data).prepare()

    status, content = send(node, prepared)  # answered by the fast path
    assert status == 200
    assert content.isascii()
    assert send(node.app, prepared) == (status, content)  # Django alone answers the same bytes

    prediction = read_2019(content)["prediction"].encode(LATIN1)
    assert torch.allclose(torch.load(io.BytesIO(prediction)), expected_mlp())


def test_json_predictions_are_rendered_as_before(node, mlp_jit):
    serve_2019(node, mlp_jit, "mlp")
    prepared = requests.Request("POST", f"{NODE}/model/mlp", json={"data": X}).prepare()
    status, content = send(node, prepared)
    assert status == 200
    assert send(node.app, prepared) == (status, content)
    assert content.startswith(b'{"success":true,"status":true,"prediction":[[')
    assert torch.allclose(torch.tensor(json.loads(content)["prediction"]), expected_mlp())


# (b) Every error answer of the model endpoints carries "success": false beside the seed's error.


def test_the_2019_client_raises_the_nodes_error_for_a_duplicate_id(node, mlp_jit):
    serve_2019(node, mlp_jit, "mlp")
    status, content = serve_2019(node, mlp_jit, "mlp")
    assert status == 409
    assert read_2019(content) == {"success": False, "error": "Model with id: mlp already exists."}
    with pytest.raises(RuntimeError, match="Model with id: mlp already exists."):
        return_bool_result_2019(read_2019(content))


def test_the_2019_client_raises_the_nodes_error_for_an_unknown_model_to_delete(node):
    prepared = requests.Request("POST", f"{NODE}/delete-model/", json={"model_id": "nope"}).prepare()
    status, content = send(node, prepared)
    assert status == 404
    assert read_2019(content) == {"success": False, "error": "Model not found!"}
    with pytest.raises(RuntimeError, match="Model not found!"):
        return_bool_result_2019(read_2019(content))


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        ("GET", "/get_model/nope", None, 404, {"success": False, "error": "Model not found."}),
        ("GET", "/is_model_copy_allowed/nope", None, 404, {"success": False, "error": "Model not found."}),
        (
            "GET",
            "/get_model/private",
            None,
            403,
            {"success": False, "error": "You're not allowed to download this model."},
        ),
        ("POST", "/models/nope", {"data": X}, 404, {"success": False, "status": False, "error": "Model not found."}),
        ("POST", "/serve-model/", {"model_id": "x"}, 400, {"success": False, "error": "'model' is required."}),
        ("POST", "/delete-model/", {}, 400, {"success": False, "error": "'model_id' is required."}),
        ("GET", "/models?format=bin", None, 404, {"success": False, "error": "Not found."}),
        ("PUT", "/serve-model", None, 405, {"success": False, "error": 'Method "PUT" not allowed.'}),
    ],
)
def test_every_model_endpoint_error_says_success_false(node, mlp_jit, method, path, body, status, expected):
    serve_2019(node, mlp_jit, "private", allow_download=False)
    json_body = body if body is not None else None
    prepared = requests.Request(method, f"{NODE}{path}", json=json_body).prepare()
    got_status, content = send(node, prepared)
    assert got_status == status
    assert read_2019(content) == expected


def test_a_missing_token_says_success_false(node, settings):
    settings.GRIDNODE_AUTH_READ = True
    status, content = send(node, requests.Request("GET", f"{NODE}/models").prepare())
    assert status == 401
    assert read_2019(content)["success"] is False


# (c) PySyft 0.2.8-0.2.9's DataCentricFLClient posts to /data_centric/serve-model/.


@pytest.mark.parametrize(
    "path",
    [
        "/data_centric/serve-model/",
        "/data_centric/serve-model",
        "/data-centric/serve-model/",
        "/data-centric/serve-model",
    ],
)
def test_pysyft_data_centric_client_serves_a_model(node, mlp_jit, path):
    fields = [
        ("type", "host-model"),
        ("encoding", LATIN1),
        ("model_id", "mlp"),
        ("allow_download", "True"),
        ("allow_remote_inference", "True"),
        ("mpc", "False"),
        ("model", ("mlp", mlp_jit, "application/octet-stream")),
    ]
    status, content = post_form(node, path, fields)
    assert status == 200, content
    assert json.loads(content) == {"success": True, "message": "Model saved with id: mlp"}
    assert download_2019(node, "mlp") == mlp_jit


def test_the_data_centric_aliases_are_in_the_write_group(node, mlp_jit, settings):
    settings.GRIDNODE_AUTH_WRITE = True
    status, content = post_form(
        node,
        "/data_centric/serve-model/",
        [("model_id", "mlp"), ("model", ("mlp", mlp_jit, "application/octet-stream"))],
    )
    assert status == 401
    assert json.loads(content)["success"] is False


def test_the_data_centric_aliases_are_documented(api):
    document = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert document.status_code == 200
    paths = json.loads(document.content)["paths"]
    assert "/data_centric/serve-model" in paths
    assert "/data-centric/serve-model" in paths


# (d) The gateway forwards /search-encrypted-models with no Content-Type.

WORKERS = ["http://alice.example:5000", "http://bob.example:5000"]


def test_the_gateway_search_without_a_content_type(node, api):
    body = {"model_id": "mnist", "workers": WORKERS, "crypto_provider": ["http://crypto.example:5000"]}
    assert api.post("/encrypted-models", body, format="json").status_code == 201

    found = requests.Request("POST", f"{NODE}/search-encrypted-models", data=json.dumps({"model_id": "mnist"}))
    prepared = found.prepare()
    assert "Content-Type" not in prepared.headers
    status, content = send(node, prepared)
    assert status == 200
    assert json.loads(content) == {"workers": WORKERS, "crypto_provider": ["http://crypto.example:5000"]}

    unknown = requests.Request("POST", f"{NODE}/search-encrypted-models", data=json.dumps({"model_id": "other"}))
    status, content = send(node, unknown.prepare())
    assert status == 404


# (e) The 2019 client's large-model path: a file part holding the UTF-8 encoding of the latin-1 text.


def large_model_fields(archive_text: str, model_id: str = "big") -> list[tuple]:
    return [
        ("model_id", model_id),
        ("encoding", LATIN1),
        ("model", (model_id, archive_text, "application/octet-stream")),
        ("allow_download", "True"),
        ("allow_remote_inference", "True"),
    ]


def test_the_2019_client_serves_a_large_model_as_utf8_of_latin1_text(node, mlp_jit):
    status, content = post_form(node, "/serve-model/", large_model_fields(mlp_jit.decode(LATIN1)))
    assert status == 200, content
    assert return_bool_result_2019(read_2019(content)) is True
    assert download_2019(node, "big") == mlp_jit


def test_a_file_part_that_is_neither_is_refused_as_before(node):
    status, content = post_form(node, "/serve-model/", large_model_fields("not an archive é"))
    assert status == 400
    assert read_2019(content) == {
        "success": False,
        "error": "The model is not a TorchScript or torch.export archive (not a zip file).",
    }


def test_the_transcoded_part_keeps_the_model_limit(node, mlp_jit, settings):
    settings.GRIDNODE_MAX_MODEL_BYTES = len(mlp_jit) - 1
    status, content = post_form(node, "/serve-model/", large_model_fields(mlp_jit.decode(LATIN1)))
    assert status == 413
    assert read_2019(content)["success"] is False


def test_dataset_data_as_latin1_text_is_ascii_escaped(node, api):
    buffer = io.BytesIO()
    torch.save(torch.tensor(X), buffer)
    raw = buffer.getvalue()
    assert any(byte >= 0x80 for byte in raw)
    body = {"id": "x", "data": raw.decode(LATIN1), "encoding": LATIN1, "tags": ["#x"], "allow_download": True}
    assert api.post("/datasets", body, format="json").status_code == 201

    status, content = send(node, requests.Request("GET", f"{NODE}/datasets/x/data").prepare())
    assert status == 200
    assert content.isascii()
    assert read_2019(content)["data"].encode(LATIN1) == raw
