"""NUL characters (and lone surrogates, which no database column holds) in ids, tags, descriptions, form
fields, paths and query strings: a JSON 4xx on SQLite and PostgreSQL alike, nothing stored."""

import json

import pytest

from tests.security.conftest import assert_refused, stored_state

pytestmark = pytest.mark.django_db

NUL = "\x00"
SURROGATE = "\ud800"
BAD_CHARACTERS = {"nul": NUL, "lone-surrogate": SURROGATE}
WORKERS = ["http://alice.example", "http://bob.example"]
PROVIDER = ["http://crypto.example"]


def bodies(bad: str) -> dict:
    """Write requests with one field carrying the bad character, by (endpoint, field)."""
    return {
        "serve-model.model_id": ("/serve-model", {"model_id": f"m{bad}", "encoding": "base64", "model": "AAAA"}),
        "serve-model.encoding": ("/serve-model", {"model_id": "m", "encoding": f"base64{bad}", "model": "AAAA"}),
        "serve-model.model_type": ("/serve-model", {"model_id": "m", "model_type": f"jit{bad}", "model": "AAAA"}),
        "serve-model.allow_download": (
            "/serve-model",
            {"model_id": "m", "allow_download": f"true{bad}", "encoding": "base64", "model": "AAAA"},
        ),
        "delete-model.model_id": ("/delete-model", {"model_id": f"mlp{bad}"}),
        "model.encoding": ("/model/mlp", {"data": "AAAA", "encoding": f"base64{bad}"}),
        "datasets.id": ("/datasets", {"id": f"d{bad}", "tags": ["t"], "data": [1.0]}),
        "datasets.tag": ("/datasets", {"id": "d", "tags": [f"t{bad}"], "data": [1.0]}),
        "datasets.description": ("/datasets", {"id": "d", "tags": ["t"], "description": f"x{bad}y", "data": [1.0]}),
        "datasets.dtype": ("/datasets", {"id": "d", "tags": ["t"], "dtype": f"float32{bad}", "data": [1.0]}),
        "datasets.allow_download": ("/datasets", {"id": "d", "allow_download": f"1{bad}", "data": [1.0]}),
        "encrypted-models.model_id": (
            "/encrypted-models",
            {"model_id": f"e{bad}", "workers": WORKERS, "crypto_provider": PROVIDER},
        ),
        "encrypted-models.description": (
            "/encrypted-models",
            {"model_id": "e", "workers": WORKERS, "crypto_provider": PROVIDER, "description": f"x{bad}y"},
        ),
        "encrypted-models.worker": (
            "/encrypted-models",
            {"model_id": "e", "workers": [f"http://alice{bad}.example", WORKERS[1]], "crypto_provider": PROVIDER},
        ),
        "search-encrypted-models.model_id": ("/search-encrypted-models", {"model_id": f"e{bad}"}),
        "v2.input-name": (
            "/v2/models/mlp/infer",
            {"inputs": [{"name": f"input__0{bad}", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        ),
    }


CASES = [pytest.param(bad, key, id=f"{name}-{key}") for name, bad in BAD_CHARACTERS.items() for key in bodies("")]


@pytest.mark.parametrize(("bad", "key"), CASES)
def test_it_refuses_a_bad_character_in_a_json_field(api, hosted, data_dir, bad, key):
    path, body = bodies(bad)[key]
    before = stored_state(data_dir)

    # As clients send it: JSON escapes (\u0000, \ud800), which the server decodes into the string.
    response = api.generic("POST", path, json.dumps(body).encode(), content_type="application/json")

    assert 400 <= response.status_code < 500
    assert_refused(response, response.status_code)
    assert stored_state(data_dir) == before


FORM_CASES = [pytest.param(key, id=key) for key in bodies("") if not key.startswith(("v2", "search"))]


@pytest.mark.parametrize("key", FORM_CASES)
@pytest.mark.parametrize("form", ["multipart", "urlencoded"])
def test_it_refuses_a_nul_in_a_form_field(api, hosted, data_dir, key, form):
    path, body = bodies(NUL)[key]
    fields = {name: value for name, value in body.items() if not isinstance(value, list | float)}
    fields |= {name: [str(item) for item in value] for name, value in body.items() if isinstance(value, list)}
    before = stored_state(data_dir)

    response = api.post(path, fields, format="multipart") if form == "multipart" else api.post(path, fields)

    assert 400 <= response.status_code < 500
    assert_refused(response, response.status_code)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/is_model_copy_allowed/mlp%00"),
        ("GET", "/get_model/mlp%00"),
        ("POST", "/model/mlp%00"),
        ("GET", "/datasets/d%00"),
        ("DELETE", "/datasets/d%00"),
        ("GET", "/datasets/d%00/data"),
        ("GET", "/encrypted-models/e%00"),
        ("DELETE", "/encrypted-models/e%00"),
        ("GET", "/v2/models/mlp%00"),
        ("POST", "/v2/models/mlp%00/infer"),
    ],
)
def test_it_refuses_a_nul_in_a_path_id(api, hosted, data_dir, method, path):
    before = stored_state(data_dir)

    response = api.generic(method, path, b"{}", content_type="application/json")

    assert "must be 1-128 characters" in assert_refused(response, 400)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize(("bad", "in_a_url"), [(NUL, "%00"), (SURROGATE, "%ED%A0%80")], ids=BAD_CHARACTERS.keys())
def test_a_search_term_with_a_bad_character_matches_nothing(api, upload_dataset, data_dir, bad, in_a_url):
    """No tag, id or description holds such a character: the search answers, on every database, that
    nothing matches (the contract's answer for a term that matches nothing)."""
    upload_dataset("d", tags=["#t"])
    before = stored_state(data_dir)

    search = api.generic("POST", "/search", json.dumps({"query": [f"#t{bad}"]}).encode(), "application/json")
    listing = api.get(f"/datasets?tag=%23t{in_a_url}")

    assert search.status_code == 200
    assert search.json() == {"content": False}
    assert listing.status_code == 200
    assert listing.json()["count"] == 0
    assert stored_state(data_dir) == before


@pytest.fixture
def upload_dataset(api):
    def create(dataset_id: str, tags):
        body = {"id": dataset_id, "tags": tags, "data": [1.0], "allow_download": True}
        response = api.post("/datasets", body, format="json")
        assert response.status_code == 201, response.content

    return create


@pytest.mark.parametrize(
    "path",
    ["/get_model/mlp?encoding=base64%00", "/datasets/d/data?format=json%00", "/datasets/d/data?encoding=%00"],
)
def test_it_refuses_a_nul_in_a_query_parameter(api, hosted, upload_dataset, path):
    upload_dataset("d", tags=["#t"])

    response = api.get(path)

    assert 400 <= response.status_code < 500
    assert_refused(response, response.status_code)
