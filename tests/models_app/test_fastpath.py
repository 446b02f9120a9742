"""The WSGI fast path answers successful JSON inference exactly as the DRF view does, and hands
everything else to Django."""

import json
from urllib.parse import urlencode

import pytest
from django.core.handlers.wsgi import WSGIHandler

from models_app.fastpath import InferenceFastPath
from tests.conftest import saved_tensor
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

X = [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]


class RecordingApp:
    """Django's WSGI handler, counting the requests that reach it."""

    def __init__(self):
        self.handler = WSGIHandler()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.handler(environ, start_response)


def call(app, method, path, body=b"", content_type="application/json", host="127.0.0.1"):
    """One request through a WSGI app: (status, headers, body)."""
    return call_wsgi(app, method, path, body, content_type, host)


@pytest.fixture
def apps(serve, mlp_jit, mlp_plan, two_input_jit):
    serve("jit", mlp_jit, allow_remote_inference=True)
    serve("plan", mlp_plan, allow_remote_inference=True)
    serve("two", two_input_jit, allow_remote_inference=True)
    serve("private", mlp_jit, allow_download=True)
    django = RecordingApp()
    return InferenceFastPath(django), django


def json_body(value) -> bytes:
    return json.dumps(value).encode()


SUCCESSES = [
    ("/model/jit", json_body({"data": X})),
    ("/model/plan/", json_body({"data": X})),
    ("/models/jit", json_body({"data": X, "encoding": "json"})),
    ("/model/two", json_body({"data": [[1.0, 2.0], [3.0, 4.0]], "all_outputs": True})),
    ("/model/jit", json_body({"data": saved_tensor(X).decode("latin-1"), "encoding": "ISO-8859-1"})),
]


@pytest.mark.parametrize(("path", "body"), SUCCESSES)
def test_it_answers_a_successful_request_itself_with_the_views_bytes(apps, path, body):
    fast, django = apps

    fast_answer = call(fast, "POST", path, body)
    assert django.calls == 0
    view_answer = call(django.handler, "POST", path, body)

    assert fast_answer[0] == view_answer[0] == 200
    assert fast_answer[2] == view_answer[2]
    assert fast_answer[1] == view_answer[1]


FAILURES = [
    ("POST", "/model/missing", json_body({"data": X}), "application/json"),
    ("POST", "/model/private", json_body({"data": X}), "application/json"),
    ("POST", "/model/jit", json_body({"data": [[1.0, 2.0]]}), "application/json"),
    ("POST", "/model/jit", json_body({}), "application/json"),
    ("POST", "/model/jit", json_body({"data": X, "encoding": "rot13"}), "application/json"),
    ("POST", "/model/jit", json_body([1, 2]), "application/json"),
    ("POST", "/model/jit", b"{not json", "application/json"),
    ("POST", "/model/..", json_body({"data": X}), "application/json"),
    ("POST", "/model/jit", b"", "application/json"),
    ("POST", "/model/jit", urlencode({"data": json.dumps(X)}).encode(), "application/x-www-form-urlencoded"),
    ("GET", "/model/jit", b"", "application/json"),
]


@pytest.mark.parametrize(("method", "path", "body", "content_type"), FAILURES)
def test_it_hands_everything_else_to_django_which_answers_as_always(apps, method, path, body, content_type):
    fast, django = apps

    fast_answer = call(fast, method, path, body, content_type)
    assert django.calls == 1
    view_answer = call(django.handler, method, path, body, content_type)

    assert fast_answer == view_answer


def test_a_form_body_still_succeeds_through_django(apps):
    fast, django = apps
    status, _, content = call(
        fast, "POST", "/model/jit", urlencode({"data": json.dumps(X)}).encode(), "application/x-www-form-urlencoded"
    )
    assert status == 200
    assert json.loads(content)["success"] is True
    assert django.calls == 1


def test_it_leaves_hosts_django_refuses_to_django(apps, settings):
    fast, django = apps
    settings.ALLOWED_HOSTS = ["node.example"]

    assert call(fast, "POST", "/model/jit", json_body({"data": X}), host="evil.example")[0] == 400
    assert django.calls == 1
    assert call(fast, "POST", "/model/jit", json_body({"data": X}), host="node.example:8000")[0] == 200
    assert django.calls == 1


def test_it_never_answers_for_a_model_deleted_or_made_private(api, apps):
    fast, django = apps
    assert call(fast, "POST", "/model/jit", json_body({"data": X}))[0] == 200

    api.post("/delete-model", {"model_id": "jit"}, format="json")
    assert call(fast, "POST", "/model/jit", json_body({"data": X}))[0] == 404

    from models_app.models import HostedModel

    HostedModel.objects.filter(model_id="plan").update(allow_remote_inference=False)
    assert call(fast, "POST", "/model/plan", json_body({"data": X}))[0] == 403
    assert django.calls == 2


def test_it_leaves_bodies_over_the_limit_to_django(apps, settings):
    fast, django = apps
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 20

    status, _, content = call(fast, "POST", "/model/jit", json_body({"data": X}))

    assert status == 413
    assert django.calls == 1


def test_the_node_is_served_through_the_fast_path():
    from gridnode.wsgi import application

    assert isinstance(application, InferenceFastPath)


def test_requests_it_answers_are_counted_and_logged(apps, caplog):
    from prometheus_client import REGISTRY

    fast, _ = apps

    def served(endpoint):
        labels = {"method": "POST", "endpoint": endpoint, "status": "200"}
        return REGISTRY.get_sample_value("gridnode_http_requests_total", labels) or 0

    before = served("model-inference"), served("model-inference-alias")
    with caplog.at_level("INFO", logger="gridnode.requests"):
        assert call(fast, "POST", "/model/jit", json_body({"data": X}))[0] == 200
        assert call(fast, "POST", "/models/jit/", json_body({"data": X}))[0] == 200

    assert served("model-inference") == before[0] + 1
    assert served("model-inference-alias") == before[1] + 1
    logged = [record.fields for record in caplog.records if record.name == "gridnode.requests"]
    assert [(f["path"], f["route"], f["model_id"], f["status"]) for f in logged] == [
        ("/model/jit", "model-inference", "jit", 200),
        ("/models/jit/", "model-inference-alias", "jit", 200),
    ]


def with_token(app, key: str):
    """The WSGI app with `Authorization: Token <key>` added to every request."""

    def app_with_token(environ, start_response):
        environ["HTTP_AUTHORIZATION"] = f"Token {key}"
        return app(environ, start_response)

    return app_with_token


def test_with_inference_auth_on_a_tokenless_request_through_the_node_is_refused(apps, settings):
    """The fast path must not answer past the token check: with inference auth on, Django (DRF) decides."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from gridnode.wsgi import application

    settings.GRIDNODE_AUTH_INFERENCE = True
    key = Token.objects.create(user=get_user_model().objects.create_user("alice")).key
    body = json_body({"data": X})

    status, headers, content = call(application, "POST", "/model/jit", body)
    assert (status, headers["www-authenticate"]) == (401, "Token")
    assert json.loads(content) == {
        "success": False,
        "status": False,
        "error": "This endpoint needs a token: send 'Authorization: Token <key>'.",
    }
    assert call(with_token(application, "0" * 40), "POST", "/model/jit", body)[0] == 401

    status, _, content = call(with_token(application, key), "POST", "/model/jit", body)
    assert status == 200
    assert json.loads(content)["success"] is True


def test_a_request_carrying_a_token_goes_to_django_which_checks_it(apps):
    """Even with inference open: a wrong token is a 401 on every path, never a 200 from the fast path."""
    fast, django = apps

    assert call(with_token(fast, "0" * 40), "POST", "/model/jit", json_body({"data": X}))[0] == 401
    assert django.calls == 1
