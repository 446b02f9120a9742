"""The WSGI fast paths answer without Django's middleware and DRF's auth classes, following them by hand:
a change to either that the fast paths were not written for fails here, naming them."""

import json

import pytest
from django.conf import settings
from django.urls import resolve

from gridnode import auth
from gridnode.fastpath import FOLLOWS, FastPath
from gridnode.wsgi import application
from tests.wsgi import call_wsgi

# Paths each fast path of the node serves, outermost first: Django resolves them to the views behind it.
SERVED = {
    "InferenceFastPath": ["/model/m", "/models/m/"],
    "SessionExchangeFastPath": ["/smpc/exchange", "/smpc/exchange/"],
}
SERVED_PATHS = [(name, path) for name, paths in SERVED.items() for path in paths]
# Whether each may answer a request without a token once the operator closes every group (GRIDNODE_AUTH_*):
# inferences then need one, the nodes' exchanges never do (their node signature is their credential).
ANSWERS_WITH_EVERY_GROUP_CLOSED = {"InferenceFastPath": False, "SessionExchangeFastPath": True}
BODY = b'{"data": [[1.0]]}'


def fast_paths() -> list[FastPath]:
    found, app = [], application
    while isinstance(app, FastPath):
        found.append(app)
        app = app.app
    return found


def names() -> str:
    return ", ".join(type(path).__name__ for path in fast_paths())


def fast_path_named(name: str) -> FastPath:
    return next(path for path in fast_paths() if type(path).__name__ == name)


def view_behind(path: str):
    """The DRF view Django runs for a POST to `path`, set up for its action as DRF sets it up."""
    func = resolve(path).func
    view = func.cls(**func.initkwargs)
    view.action = func.actions["post"]
    return view


def check_middleware() -> None:
    assert FOLLOWS["MIDDLEWARE"] == settings.MIDDLEWARE, (
        f"MIDDLEWARE changed: {names()} answer without it; make them do what the change does (or hand such"
        " requests to Django), then update gridnode.fastpath.FOLLOWS"
    )


def check_default_auth_classes(setting: str) -> None:
    assert settings.REST_FRAMEWORK[setting] == FOLLOWS[setting], (
        f"REST_FRAMEWORK[{setting!r}] changed: {names()} decide without it (gridnode.auth.answers_without_a_token);"
        " follow the change there, then update gridnode.fastpath.FOLLOWS"
    )


def test_the_node_runs_its_fast_paths():
    assert [type(path).__name__ for path in fast_paths()] == list(SERVED)


@pytest.mark.parametrize(("name", "path"), SERVED_PATHS)
def test_each_fast_path_serves_its_paths(name, path):
    assert fast_path_named(name).paths.fullmatch(path)


def test_the_middleware_is_what_the_fast_paths_follow():
    check_middleware()


@pytest.mark.parametrize("setting", ["DEFAULT_AUTHENTICATION_CLASSES", "DEFAULT_PERMISSION_CLASSES"])
def test_the_default_auth_classes_are_what_the_fast_paths_follow(setting):
    check_default_auth_classes(setting)


def test_a_middleware_the_fast_paths_do_not_follow_fails_the_check_naming_them(settings):
    """The deliberate break, kept: a middleware added to the settings and not to the fast paths."""
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]

    with pytest.raises(AssertionError, match="InferenceFastPath, SessionExchangeFastPath answer without it"):
        check_middleware()


def test_a_permission_class_the_fast_paths_do_not_follow_fails_the_check_naming_them(settings):
    """The deliberate break, kept: a default permission class that DRF would apply and the fast paths would not."""
    permissions = [*settings.REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"], "rest_framework.permissions.IsAuthenticated"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_PERMISSION_CLASSES": permissions}

    with pytest.raises(AssertionError, match="InferenceFastPath, SessionExchangeFastPath decide without it"):
        check_default_auth_classes("DEFAULT_PERMISSION_CLASSES")


def dotted(classes) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in classes]


@pytest.mark.parametrize(("name", "path"), SERVED_PATHS)
def test_the_views_behind_the_fast_paths_use_the_default_auth_classes(name, path):
    """A view overriding them would be judged by other rules than the fast path in front of it applies (the
    defaults themselves are checked above)."""
    view = view_behind(path)
    assert dotted(view.authentication_classes) == settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"], (
        f"{type(view).__name__} has authentication classes of its own: {name} does not follow them"
    )
    assert dotted(view.permission_classes) == settings.REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"], (
        f"{type(view).__name__} has permission classes of its own: {name} does not follow them"
    )


@pytest.mark.parametrize(("name", "path"), SERVED_PATHS)
def test_each_fast_path_asks_about_the_auth_group_of_the_view_behind_it(name, path):
    view = view_behind(path)
    assert fast_path_named(name).group == auth.declared_group(view, "POST"), (
        f"{type(view).__name__}.{view.action} declares another auth group (@requires) than {name} asks about"
    )


@pytest.mark.parametrize("fast_path", fast_paths(), ids=lambda path: type(path).__name__)
def test_each_fast_path_leaves_a_request_with_a_token_to_django(fast_path):
    """A token that is sent is always checked, and only DRF checks tokens: on the nodes' exchanges too, whose
    group never asks for one (DRF's default authentication, which their view uses, checks a token sent)."""
    reached = []

    def django(environ, start_response):
        reached.append(environ["wsgi.input"].read())
        start_response("204 No Content", [])
        return [b""]

    path = SERVED[type(fast_path).__name__][0]
    status, _, _ = call_wsgi(type(fast_path)(django), "POST", path, BODY, headers={"Authorization": "Token x"})

    assert auth.answers_without_a_token(fast_path.group, {}) is True
    assert auth.answers_without_a_token(fast_path.group, {"HTTP_AUTHORIZATION": "Token x"}) is False
    assert (status, reached) == (204, [BODY])  # handed on before a byte of the body was read


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "path"), SERVED_PATHS)
def test_a_wrong_token_is_refused_on_every_fast_path_as_django_refuses_it(name, path):
    status, headers, content = call_wsgi(application, "POST", path, BODY, headers={"Authorization": "Token wrong"})

    assert (status, headers["www-authenticate"]) == (401, "Token")
    assert json.loads(content)["error"] == "Invalid token."


@pytest.mark.parametrize("fast_path", fast_paths(), ids=lambda path: type(path).__name__)
def test_closing_every_group_leaves_to_django_all_but_the_nodes_exchanges(fast_path, settings):
    for group in auth.GROUPS:
        setattr(settings, f"GRIDNODE_AUTH_{group.upper()}", True)

    expected = ANSWERS_WITH_EVERY_GROUP_CLOSED[type(fast_path).__name__]
    assert auth.answers_without_a_token(fast_path.group, {}) is expected
