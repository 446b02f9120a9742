"""Fixtures for the auth tests: users with tokens, and switches that close groups of endpoints."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from gridnode.auth import GROUPS


@pytest.fixture
def token(db) -> Token:
    """A token of an ordinary (non-staff) user, `alice`."""
    user = get_user_model().objects.create_user("alice")
    return Token.objects.create(user=user)


@pytest.fixture
def close(settings):
    """Close groups of endpoints: `close("write", "read")`, or `close()` for every group."""

    def switch(*groups):
        for group in groups or GROUPS:
            setattr(settings, f"GRIDNODE_AUTH_{group.upper()}", True)

    return switch


def token_header(key: str) -> dict:
    """The header a client sends its token in, as the test client's keyword arguments."""
    return {"HTTP_AUTHORIZATION": f"Token {key}"}


def assert_unauthorized(response, message: str | None = None, **fields) -> None:
    """A 401 in the node's one error shape, with the header that names the scheme."""
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"] == "Token"
    body = response.json()
    assert set(body) == {"error", *fields}, body
    assert {key: body[key] for key in fields} == fields
    if message is not None:
        assert body["error"] == message
