"""Each endpoint is in one group; a closed group answers 401 without a valid token, an open one as before."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from datasets_app.models import Dataset
from gridnode.auth import DOWNLOAD, GROUPS, INFERENCE, NODES, READ, WRITE
from models_app.models import HostedModel
from smpc_app.models import EncryptedModel
from tests.auth.conftest import assert_unauthorized, token_header
from tests.smpc_app.helpers import ALICE, BOB, CRYPTO

pytestmark = pytest.mark.django_db

X = [[0.5, -1.0, 2.0, 0.25]]
V2_INPUT = {"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
MISSING = "This endpoint needs a token: send 'Authorization: Token <key>'."


def serve_body(archive: bytes) -> dict:
    return {"model_id": "new", "encoding": "ISO-8859-1", "model": archive.decode("latin-1")}


# (group, method, path, body or a function of the jit archive, status when let through, 401's extra fields)
ENDPOINTS = [
    (READ, "get", "/models", None, 200, {"success": False}),
    (READ, "get", "/models/", None, 200, {"success": False}),
    (READ, "get", "/is_model_copy_allowed/m", None, 200, {"success": False}),
    (READ, "get", "/datasets", None, 200, {}),
    (READ, "get", "/datasets/d", None, 200, {}),
    (READ, "get", "/dataset-tags", None, 200, {}),
    (READ, "post", "/search", {"query": ["#a"]}, 200, {}),
    (READ, "get", "/encrypted-models", None, 200, {}),
    (READ, "get", "/encrypted-models/e", None, 200, {}),
    (READ, "post", "/search-encrypted-models", {"model_id": "e"}, 200, {}),
    (READ, "get", "/v2", None, 200, {}),
    (READ, "get", "/v2/models/m", None, 200, {}),
    (READ, "get", "/v2/models/m/versions/1", None, 200, {}),
    (READ, "get", "/v2/models/m/ready", None, 200, {}),
    (WRITE, "post", "/serve-model", serve_body, 200, {"success": False}),
    (WRITE, "post", "/delete-model", {"model_id": "m"}, 200, {"success": False}),
    (WRITE, "post", "/delete_model/", {"model_id": "m"}, 200, {"success": False}),
    (WRITE, "post", "/datasets", {"id": "new", "data": [1.0, 2.0]}, 201, {}),
    (WRITE, "delete", "/datasets/d", None, 204, {}),
    (
        WRITE,
        "post",
        "/encrypted-models",
        {"model_id": "new", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO]},
        201,
        {},
    ),
    (WRITE, "delete", "/encrypted-models/e", None, 204, {}),
    (INFERENCE, "post", "/model/m", {"data": X}, 200, {"success": False, "status": False}),
    (INFERENCE, "post", "/models/m/", {"data": X}, 200, {"success": False, "status": False}),
    (INFERENCE, "post", "/v2/models/m/infer", V2_INPUT, 200, {}),
    (DOWNLOAD, "get", "/get_model/m", None, 200, {"success": False}),
    (DOWNLOAD, "get", "/datasets/d/data", None, 200, {}),
]
IDS = [f"{method.upper()} {path}" for _, method, path, *_ in ENDPOINTS]


@pytest.fixture
def objects(serve, api, mlp_jit):
    """One of each thing the endpoints act on: model `m`, dataset `d` (tag `#a`), encrypted model `e`."""
    serve("m", mlp_jit, allow_download=True, allow_remote_inference=True)
    api.post("/datasets", {"id": "d", "tags": ["#a"], "data": [1.0], "allow_download": True}, format="json")
    api.post(
        "/encrypted-models", {"model_id": "e", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}, format="json"
    )
    return mlp_jit


def send(api, method, path, body, archive, **headers):
    if callable(body):
        body = body(archive)
    return getattr(api, method)(path, body, format="json", **headers) if body else getattr(api, method)(path, **headers)


def stored() -> tuple:
    """What the database holds, to show that a refused request changed nothing."""
    return (
        sorted(HostedModel.objects.values_list("model_id", flat=True)),
        sorted(Dataset.objects.values_list("dataset_id", flat=True)),
        sorted(EncryptedModel.objects.values_list("model_id", flat=True)),
    )


@pytest.mark.parametrize(("group", "method", "path", "body", "status", "fields"), ENDPOINTS, ids=IDS)
def test_it_answers_401_without_a_token_when_the_group_is_closed(
    api, objects, close, group, method, path, body, status, fields
):
    before = stored()
    close(group)

    response = send(api, method, path, body, objects)

    assert_unauthorized(response, MISSING, **fields)
    assert stored() == before


@pytest.mark.parametrize(("group", "method", "path", "body", "status", "fields"), ENDPOINTS, ids=IDS)
def test_it_answers_401_for_a_wrong_token_when_the_group_is_closed(
    api, objects, close, group, method, path, body, status, fields
):
    before = stored()
    close(group)

    response = send(api, method, path, body, objects, **token_header("0" * 40))

    assert_unauthorized(response, "Invalid token.", **fields)
    assert stored() == before


@pytest.mark.parametrize(("group", "method", "path", "body", "status", "fields"), ENDPOINTS, ids=IDS)
def test_it_answers_as_always_with_a_valid_token_when_every_group_is_closed(
    api, objects, close, token, group, method, path, body, status, fields
):
    close()

    response = send(api, method, path, body, objects, **token_header(token.key))

    assert response.status_code == status, response.content


@pytest.mark.parametrize(("group", "method", "path", "body", "status", "fields"), ENDPOINTS, ids=IDS)
def test_it_needs_no_token_while_its_own_group_is_open(api, objects, close, group, method, path, body, status, fields):
    close(*(other for other in GROUPS if other != group))

    response = send(api, method, path, body, objects)

    assert response.status_code == status, response.content


def test_every_group_is_open_by_default(settings):
    assert [getattr(settings, f"GRIDNODE_AUTH_{group.upper()}") for group in GROUPS] == [False] * len(GROUPS)


def _routes(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def test_every_action_of_the_nodes_views_declares_its_group():
    """A view that forgets `@requires` falls back to read/write by method; the node's own never rely on that."""
    for route, callback in _routes(get_resolver().url_patterns):
        view_class = getattr(callback, "cls", None)
        if view_class is None or not view_class.__module__.startswith(("models_app", "datasets_app", "smpc_app")):
            continue
        for method, action in callback.actions.items():
            group = getattr(getattr(view_class, action), "auth_group", None)
            where = f"{method.upper()} {route} ({view_class.__name__}.{action})"
            assert group in (*GROUPS, NODES), f"{where} declares no group"


@pytest.mark.parametrize(("group", "method", "path", "body", "status", "fields"), ENDPOINTS, ids=IDS)
def test_the_table_above_is_what_the_views_declare(group, method, path, body, status, fields):
    match = resolve(path)
    view, action = match.func.cls, getattr(match.func.cls, match.func.actions[method])
    assert (action.auth_group, {**getattr(view, "error_fields", {}), **action.error_fields}) == (group, fields)


def test_a_method_the_endpoint_does_not_have_still_needs_a_token_for_its_kind(api, close):
    close(WRITE)
    assert_unauthorized(api.post("/models", {}, format="json"), success=False)
    assert api.get("/serve-model").status_code == 405


# Every action of the encrypted-model views (smpc_app), with its group. `nodes` is for calls between the
# nodes of a model, which prove themselves with a signature and are never asked for a user token: moving a
# client's endpoint there (the inference entry point, say) would open it on a node whose operator closed
# its group, and must fail a test here.
SMPC_ENDPOINTS = [
    (READ, "get", "/encrypted-models"),
    (WRITE, "post", "/encrypted-models"),
    (READ, "get", "/encrypted-models/e"),
    (WRITE, "delete", "/encrypted-models/e"),
    (WRITE, "post", "/encrypted-models/e/share"),
    (READ, "get", "/encrypted-models/e/share"),
    (WRITE, "patch", "/encrypted-models/e/share"),
    (WRITE, "delete", "/encrypted-models/e/share"),
    (DOWNLOAD, "get", "/encrypted-models/e/share/data"),
    (INFERENCE, "post", "/encrypted-models/e/inference"),
    (NODES, "post", "/encrypted-models/e/randomness"),
    (NODES, "post", "/smpc/exchange"),
    (READ, "post", "/search-encrypted-models"),
]
CLIENT_SMPC_ENDPOINTS = [entry for entry in SMPC_ENDPOINTS if entry[0] != NODES]


def smpc_ids(entries) -> list[str]:
    return [f"{method.upper()} {path}" for _, method, path in entries]


def smpc_action(method: str, path: str) -> tuple[type, str]:
    match = resolve(path)
    return match.func.cls, match.func.actions[method]


def test_the_smpc_table_names_every_action_of_the_encrypted_model_views():
    routed = {
        (callback.cls, action)
        for _, callback in _routes(get_resolver().url_patterns)
        if getattr(callback, "cls", None) is not None and callback.cls.__module__.startswith("smpc_app")
        for action in callback.actions.values()
    }

    assert {smpc_action(method, path) for _, method, path in SMPC_ENDPOINTS} == routed


@pytest.mark.parametrize(("group", "method", "path"), SMPC_ENDPOINTS, ids=smpc_ids(SMPC_ENDPOINTS))
def test_the_smpc_table_is_what_the_views_declare(group, method, path):
    view_class, action = smpc_action(method, path)

    assert getattr(view_class, action).auth_group == group


@pytest.mark.parametrize(("group", "method", "path"), CLIENT_SMPC_ENDPOINTS, ids=smpc_ids(CLIENT_SMPC_ENDPOINTS))
def test_closing_its_group_closes_the_smpc_endpoint(api, close, group, method, path):
    close(group)

    assert_unauthorized(getattr(api, method)(path), MISSING)


@pytest.mark.parametrize(("group", "method", "path"), SMPC_ENDPOINTS, ids=smpc_ids(SMPC_ENDPOINTS))
def test_closing_every_other_group_leaves_the_smpc_endpoint_open(api, close, group, method, path):
    # A `nodes` endpoint stays open with every group closed: its signature, not a token, is checked.
    close(*(other for other in GROUPS if other != group))

    response = getattr(api, method)(path)

    assert not (response.status_code == 401 and response.json().get("error") == MISSING), response.content
