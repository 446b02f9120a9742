"""The WSGI fast paths answer without Django's middleware and DRF's auth classes, following them by hand:
a change to either that the fast paths were not written for fails here, naming them."""

import pytest
from django.conf import settings
from django.urls import resolve

from gridnode.auth import answers_without_a_token
from gridnode.fastpath import FOLLOWS, FastPath
from gridnode.wsgi import application


def fast_paths() -> list[FastPath]:
    found, app = [], application
    while isinstance(app, FastPath):
        found.append(app)
        app = app.app
    return found


def names() -> str:
    return ", ".join(type(path).__name__ for path in fast_paths())


def test_the_node_runs_its_fast_paths():
    assert [type(path).__name__ for path in fast_paths()][:1] == ["InferenceFastPath"]


def test_the_middleware_is_what_the_fast_paths_follow():
    assert FOLLOWS["MIDDLEWARE"] == settings.MIDDLEWARE, (
        f"MIDDLEWARE changed: {names()} answer without it; make them do what the change does (or hand such"
        " requests to Django), then update gridnode.fastpath.FOLLOWS"
    )


@pytest.mark.parametrize("setting", ["DEFAULT_AUTHENTICATION_CLASSES", "DEFAULT_PERMISSION_CLASSES"])
def test_the_default_auth_classes_are_what_the_fast_paths_follow(setting):
    assert settings.REST_FRAMEWORK[setting] == FOLLOWS[setting], (
        f"REST_FRAMEWORK[{setting!r}] changed: {names()} decide without it (gridnode.auth.answers_without_a_token);"
        " follow the change there, then update gridnode.fastpath.FOLLOWS"
    )


def dotted(classes) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in classes]


@pytest.mark.parametrize("path", ["/model/m", "/models/m/", "/smpc/exchange"])
def test_the_views_behind_the_fast_paths_use_the_default_auth_classes(path):
    """A view overriding them would be judged by other rules than the fast path in front of it applies."""
    view = resolve(path).func.cls
    assert dotted(view.authentication_classes) == FOLLOWS["DEFAULT_AUTHENTICATION_CLASSES"], (
        f"{view.__name__} has authentication classes of its own: {names()} do not follow them"
    )
    assert dotted(view.permission_classes) == FOLLOWS["DEFAULT_PERMISSION_CLASSES"], (
        f"{view.__name__} has permission classes of its own: {names()} do not follow them"
    )


@pytest.mark.parametrize("path", fast_paths(), ids=lambda path: type(path).__name__)
def test_each_fast_path_leaves_a_request_with_a_token_to_django(path, settings):
    """A token that is sent is always checked, and only DRF checks tokens."""
    assert answers_without_a_token(path.group, {}) is True
    assert answers_without_a_token(path.group, {"HTTP_AUTHORIZATION": "Token x"}) is False
