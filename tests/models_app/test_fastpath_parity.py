"""Whatever the query string, Content-Type and Accept of an inference request, the node behind its fast path
answers exactly as Django alone does; and the raw-archive renderer answers only the archive download."""

import json

import pytest

from models_app.fastpath import InferenceFastPath
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

X = [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]
BODY = json.dumps({"data": X}).encode()

QUERIES = ["", "format=json", "format=bin", "format=api", "foo=1"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/jsonx",
    "application/json-patch+json",
    "text/plain",
    None,  # no Content-Type at all
]
ACCEPTS = [
    None,  # no Accept at all
    "*/*",
    "application/json",
    "application/octet-stream",
    "text/html",
    "application/json;q=0.5",
    "text/html,*/*;q=0.1",
    "garbage",
]
# Requests that Django answers 200 and the fast path is there to answer itself (what clients send); for the
# rest, handing them to Django or answering alike are both right.
PLAIN = {
    "query": {""},
    "content_type": {"application/json", "application/json; charset=utf-8", "APPLICATION/JSON"},
    "accept": {None, "*/*", "application/json"},
}


class RecordingApp:
    """A WSGI app, counting the requests that reach it."""

    def __init__(self, app):
        self.app = app
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.app(environ, start_response)


def requested(app, query: str, content_type: str | None):
    """The WSGI app, given requests with this query string and Content-Type (`None`: the header is absent)."""

    def app_with(environ, start_response):
        environ["QUERY_STRING"] = query
        if content_type is None:
            del environ["CONTENT_TYPE"]
        else:
            environ["CONTENT_TYPE"] = content_type
        return app(environ, start_response)

    return app_with


def answer(app, path: str, query: str, content_type: str | None, accept: str | None, method: str = "POST", cookie=None):
    """(status, headers, body) of one request through a WSGI app."""
    headers = {} if accept is None else {"Accept": accept}
    if cookie is not None:
        headers["Cookie"] = cookie
    body = BODY if method == "POST" else b""
    return call_wsgi(requested(app, query, content_type), method, path, body, headers=headers)


@pytest.fixture
def node(serve, mlp_jit):
    """(the node's WSGI app with its fast path in front, Django alone behind it, counting what reaches it)."""
    from gridnode.wsgi import application

    serve("jit", mlp_jit, allow_remote_inference=True, allow_download=True)
    behind = RecordingApp(application.app)
    return InferenceFastPath(behind), behind


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("query", QUERIES)
def test_it_answers_every_request_exactly_as_django_alone(node, query, content_type, accept):
    fast, django = node

    through_fast_path = answer(fast, "/model/jit", query, content_type, accept)
    answered_by_fast_path = django.calls == 0
    by_django = answer(django.app, "/model/jit", query, content_type, accept)

    assert through_fast_path[0] == by_django[0]
    assert through_fast_path[1] == by_django[1]
    assert through_fast_path[2] == by_django[2]
    if query in PLAIN["query"] and content_type in PLAIN["content_type"] and accept in PLAIN["accept"]:
        assert by_django[0] == 200
        assert answered_by_fast_path


@pytest.mark.parametrize(
    ("query", "content_type", "accept", "status"),
    [
        ("format=bin", "application/json", None, 404),
        ("format=api", "application/json", None, 404),
        ("", "application/jsonx", None, 415),
        ("", None, None, 415),
        ("", "application/json", "application/octet-stream", 406),
        ("", "application/json", "text/html", 406),
        ("", "application/json", "garbage", 406),
    ],
)
def test_the_node_refuses_what_json_cannot_satisfy_in_the_one_error_shape(node, query, content_type, accept, status):
    fast, _ = node

    code, headers, content = answer(fast, "/model/jit", query, content_type, accept)

    assert code == status
    assert headers["content-type"] == "application/json"
    # The one error shape, with the model endpoints' "success": false (and the inference's "status": false).
    assert json.loads(content) == {"success": False, "status": False, "error": json.loads(content)["error"]}


@pytest.mark.parametrize("accept", ["application/json;q=0.5", "text/html,*/*;q=0.1", "application/json; indent=4"])
def test_an_accept_with_parameters_is_left_to_django_which_answers_json(node, accept):
    fast, django = node

    code, headers, content = answer(fast, "/model/jit", "", "application/json", accept)

    assert (code, headers["content-type"]) == (200, "application/json")
    assert json.loads(content)["success"] is True
    assert django.calls == 1


@pytest.mark.parametrize("accept", ["", "*/*" + " " * 9000, "application/json,", "*/*, application/json"])
def test_it_leaves_odd_accept_spellings_to_django_or_answers_them_alike(node, accept):
    fast, _ = node

    assert answer(fast, "/model/jit", "", "application/json", accept) == answer(
        fast.app.app, "/model/jit", "", "application/json", accept
    )


@pytest.mark.parametrize("cookie", ["sessionid=abc", "sessionid=", "csrftoken=x", "other=1"])
def test_a_request_with_a_cookie_is_left_to_django_which_answers_it(node, cookie):
    """Django's session and CSRF middleware answer a stale session cookie (`Vary: Cookie` and a Set-Cookie
    clearing it) or a malformed CSRF one (a Set-Cookie with a new token); the fast path, which skips them,
    answered the same requests without either (found by a stranger attacking the node)."""
    fast, django = node

    code, headers, content = answer(fast, "/model/jit", "", "application/json", None, cookie=cookie)

    assert django.calls == 1
    assert code == 200
    assert json.loads(content)["success"] is True
    by_django = answer(django.app, "/model/jit", "", "application/json", None, cookie=cookie)
    assert headers.keys() == by_django[1].keys()
    if not cookie.startswith("csrftoken="):  # a new token each time
        assert (code, headers, content) == by_django


OTHER_ACTIONS = [
    ("POST", "/model/jit", {"data": X}),
    ("POST", "/models/jit", {"data": X}),
    ("GET", "/models", None),
    ("GET", "/is_model_copy_allowed/jit", None),
    ("POST", "/serve-model", {"model_id": "new", "model": "x", "encoding": "base64"}),
    ("POST", "/delete-model", {"model_id": "jit"}),
]


@pytest.mark.parametrize(("method", "path", "body"), OTHER_ACTIONS)
def test_format_bin_is_an_unknown_format_everywhere_but_the_download(api, node, method, path, body):
    response = getattr(api, method.lower())(path, body, format="json", QUERY_STRING="format=bin")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "Not found."
    assert response.json()["success"] is False


@pytest.mark.parametrize(("method", "path", "body"), OTHER_ACTIONS)
def test_octet_stream_is_not_acceptable_everywhere_but_the_download(api, node, method, path, body):
    response = getattr(api, method.lower())(path, body, format="json", HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "Could not satisfy the request Accept header."
    assert response.json()["success"] is False


def test_nothing_was_deleted_or_served_by_the_refused_requests(api, node):
    from models_app.models import HostedModel

    api.post("/delete-model?format=bin", {"model_id": "jit"}, format="json")
    api.post("/delete-model", {"model_id": "jit"}, format="json", HTTP_ACCEPT="application/octet-stream")

    assert list(HostedModel.objects.values_list("model_id", flat=True)) == ["jit"]


@pytest.mark.parametrize("how", [{"HTTP_ACCEPT": "application/octet-stream"}, {"QUERY_STRING": "format=bin"}])
def test_the_download_still_answers_the_archives_exact_bytes(api, node, mlp_jit, how):
    response = api.get("/get_model/jit", **how)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert 'filename="jit.pt"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == mlp_jit


def test_the_download_still_answers_json_by_default_and_for_format_json(api, node, mlp_jit):
    for response in (api.get("/get_model/jit"), api.get("/get_model/jit?format=json")):
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert response.json()["serialized_model"].encode("latin-1") == mlp_jit


def test_the_document_offers_the_raw_archive_only_on_the_download(api):
    paths = api.get("/api/schema/?format=json").json()["paths"]

    def answered_types(path, method):
        return set(paths[path][method]["responses"]["200"]["content"])

    assert answered_types("/get_model/{model_id}", "get") == {"application/json", "application/octet-stream"}
    for path, method in [("/model/{model_id}", "post"), ("/models", "get"), ("/serve-model", "post")]:
        assert answered_types(path, method) == {"application/json"}
