"""GET /api/schema/: the OpenAPI 3 document of every endpoint, valid, complete, in the read group."""

import re

import orjson
import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db

JSON_DOCUMENT = "application/vnd.oai.openapi+json"
ERROR_REF = "#/components/schemas/Error"
# The routes the document leaves out on purpose: Django's admin (HTML forms behind a staff login).
UNDOCUMENTED = ("admin/",)
# What a route's regex becomes in the document: a named group is a {parameter}, the optional trailing slash
# and the anchors go (the document spells each path once, as the seed does).
NAMED_GROUP = re.compile(r"\(\?P<(\w+)>\[\^/\]\+\)")
OPTIONAL_VERSION = re.compile(r"\(\?:(/versions/\{version\})\)\?")


def document(api) -> dict:
    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith(JSON_DOCUMENT)
    return orjson.loads(response.content)


def routes(patterns=None, prefix: str = ""):
    """(regex, view) of every route in the URLconf, includes flattened."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        regex = prefix + str(pattern.pattern).removeprefix("^")
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, regex)
        elif isinstance(pattern, URLPattern):
            yield regex, pattern.callback


def documented_paths(regex: str) -> list[str]:
    """The document's spellings of one route (a v2 model route with and without its version)."""
    path = "/" + NAMED_GROUP.sub(r"{\1}", regex).removesuffix("$").removesuffix("/?")
    if OPTIONAL_VERSION.search(path):
        return [OPTIONAL_VERSION.sub("", path), OPTIONAL_VERSION.sub(r"\1", path)]
    return [path]


def methods_of(view) -> list[str]:
    """The HTTP methods a route serves: a DRF viewset's mapped actions, else GET (probes, metrics, the UI)."""
    actions = getattr(view, "actions", None)
    if actions:
        # DRF adds HEAD to a GET route's actions on its first request; HEAD is GET without a body, not an operation.
        return sorted(method for method in actions if method != "head")
    return ["get"]


def every_route() -> list[tuple[str, str]]:
    found = []
    for regex, view in routes():
        if regex.startswith(UNDOCUMENTED):
            continue
        for path in documented_paths(regex):
            found.extend((path, method) for method in methods_of(view))
    return found


def test_it_validates_as_openapi_3(api):
    schema = document(api)

    validate_schema(schema)  # raises on any violation of the OpenAPI 3.0 meta-schema
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Grid Node"
    assert "api.md" in schema["info"]["description"]


def test_it_generates_without_a_warning(tmp_path):
    # drf-spectacular warns where it had to guess (an undescribed view, a colliding operation id).
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))

    assert "/serve-model" in yaml.safe_load((tmp_path / "schema.yaml").read_text())["paths"]


def test_it_answers_yaml_by_default_and_with_a_trailing_slash_or_not(api):
    with_slash = api.get("/api/schema/")
    without = api.get("/api/schema")

    assert with_slash.status_code == without.status_code == 200
    assert with_slash["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(with_slash.content)["paths"] == yaml.safe_load(without.content)["paths"]


def test_it_lists_every_route_of_the_urlconf(api):
    paths = document(api)["paths"]
    expected = every_route()

    missing = [(path, method) for path, method in expected if method not in paths.get(path, {})]

    assert len(expected) > 30
    assert missing == []
    # And nothing that is not a route: every documented operation is one of them.
    assert sorted((path, method) for path, operations in paths.items() for method in operations) == sorted(expected)


def test_it_gives_every_operation_a_unique_id(api):
    operation_ids = [op["operationId"] for ops in document(api)["paths"].values() for op in ops.values()]

    assert len(operation_ids) == len(set(operation_ids))
    assert {"serve_model", "delete_model_alias", "run_inference_alias", "v2_infer_version"} <= set(operation_ids)


def test_it_describes_errors_in_the_one_shape(api):
    schema = document(api)
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    assert schema["components"]["schemas"]["Error"]["properties"]["error"] == {"type": "string"}

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                assert list(response["content"]) == ["application/json"], (path, method, status)
                assert ERROR_REF in orjson.dumps(response["content"]["application/json"]["schema"]).decode()


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/serve-model", "post", {"200", "400", "401", "404", "409", "411", "413", "415"}),
        ("/delete-model", "post", {"200", "400", "401", "404", "411", "413", "415"}),
        ("/is_model_copy_allowed/{model_id}", "get", {"200", "400", "401", "403", "404"}),
        ("/get_model/{model_id}", "get", {"200", "400", "401", "403", "404"}),
        ("/model/{model_id}", "post", {"200", "400", "401", "403", "404", "411", "413", "415"}),
        ("/datasets", "post", {"201", "400", "401", "409", "411", "413", "415"}),
        ("/datasets/{dataset_id}", "delete", {"204", "400", "401", "404"}),
        ("/search", "post", {"200", "400", "401", "411", "413"}),
        ("/encrypted-models", "post", {"201", "400", "401", "409", "411", "413", "415"}),
        ("/search-encrypted-models", "post", {"200", "400", "401", "404", "411", "413"}),
        ("/v2/models/{model_id}/infer", "post", {"200", "400", "401", "403", "404", "411", "413", "415"}),
        ("/healthz", "get", {"200", "405"}),
        ("/readyz", "get", {"200", "405", "503"}),
        ("/metrics", "get", {"200", "401", "405"}),
    ],
)
def test_it_gives_the_contracts_status_codes(api, path, method, statuses):
    assert set(document(api)["paths"][path][method]["responses"]) == statuses


def test_it_describes_json_multipart_and_form_bodies_for_writes(api):
    paths = document(api)["paths"]
    both = {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"}

    for path in ("/serve-model", "/delete-model", "/model/{model_id}", "/datasets", "/encrypted-models"):
        method = "post"
        assert set(paths[path][method]["requestBody"]["content"]) == both, path
    upload = paths["/serve-model"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["model"]["format"] == "binary"
    # /search and v2 read their bodies as JSON whatever the Content-Type: JSON only.
    assert list(paths["/search"]["post"]["requestBody"]["content"]) == ["application/json"]
    assert list(paths["/v2/models/{model_id}/infer"]["post"]["requestBody"]["content"]) == ["application/json"]


def test_it_is_open_by_default(api):
    assert api.get("/api/schema/").status_code == 200
    assert api.get("/api/schema/swagger-ui/").status_code == 200


@pytest.mark.parametrize("path", ["/api/schema/", "/api/schema/swagger-ui/"])
def test_it_is_in_the_read_group(api, settings, django_user_model, path):
    settings.GRIDNODE_AUTH_READ = True

    refused = api.get(path)
    key = Token.objects.create(user=django_user_model.objects.create_user("reader")).key
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    allowed = api.get(path)

    assert refused.status_code == 401
    assert refused.json() == {"error": "This endpoint needs a token: send 'Authorization: Token <key>'."}
    assert refused["WWW-Authenticate"] == "Token"
    assert allowed.status_code == 200


def test_it_refuses_an_unknown_format_in_the_one_error_shape(api):
    response = api.get("/api/schema/?format=xml")

    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}


def test_it_refuses_a_write_with_a_json_405(api):
    response = api.post("/api/schema/", {}, format="json")

    assert response.status_code == 405
    assert set(response.json()) == {"error"}
