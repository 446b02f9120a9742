"""What counts as a valid token: DRF's keys, per user, in `Authorization: Token <key>`; nothing else."""

import pytest
from rest_framework.authtoken.models import Token

from gridnode.auth import READ
from tests.auth.conftest import assert_unauthorized, token_header

pytestmark = pytest.mark.django_db

MISSING = "This endpoint needs a token: send 'Authorization: Token <key>'."


@pytest.mark.parametrize(
    "header",
    [
        "Token",  # no key
        "Token a b",  # a key with a space
        "Token " + "a" * 41,  # longer than any stored key
        "Token abc\x00def",  # a NUL byte, which PostgreSQL would refuse in a query
        "Token abcé",  # not ASCII
        "Token " + "f" * 40,  # well formed, but no such key
    ],
    ids=["no-key", "space", "too-long", "nul", "non-ascii", "unknown"],
)
def test_a_malformed_or_unknown_token_is_a_401(api, close, token, header):
    close(READ)
    assert_unauthorized(api.get("/models", HTTP_AUTHORIZATION=header), "Invalid token.", success=False)


def test_the_keyword_is_case_insensitive_as_drf_reads_it(api, close, token):
    close(READ)
    assert api.get("/models", HTTP_AUTHORIZATION=f"token {token.key}").status_code == 200


@pytest.mark.parametrize("header", ["Bearer abc", "Basic YWxpY2U6c2VjcmV0"])
def test_another_scheme_is_no_token_at_all(api, close, token, header):
    close(READ)
    assert_unauthorized(api.get("/models", HTTP_AUTHORIZATION=header), MISSING, success=False)
    assert api.get("/dataset-tags", HTTP_AUTHORIZATION=header).status_code == 401


def test_a_wrong_token_is_refused_on_an_open_group_too(api, token):
    """A client learns that its token is wrong at once, rather than being served as anonymous."""
    response = api.get("/models", **token_header("0" * 40))
    assert_unauthorized(response, "Invalid token.", success=False)
    assert api.get("/models", **token_header(token.key)).status_code == 200
    assert api.get("/models").status_code == 200


def test_an_inactive_users_token_is_refused(api, close, token):
    close(READ)
    token.user.is_active = False
    token.user.save()
    assert_unauthorized(api.get("/models", **token_header(token.key)), "Invalid token.", success=False)


def test_a_regenerated_or_deleted_token_stops_working(api, close, token):
    close(READ)
    old = token.key
    token.delete()
    assert_unauthorized(api.get("/models", **token_header(old)), "Invalid token.", success=False)

    fresh = Token.objects.create(user=token.user)
    assert api.get("/models", **token_header(fresh.key)).status_code == 200


def test_a_session_login_is_not_a_token(client, admin_user, close):
    """Only tokens open the API: an operator logged into the admin still needs one (and no CSRF applies)."""
    close(READ)
    client.force_login(admin_user)
    response = client.get("/models")
    assert_unauthorized(response, MISSING, success=False)


def test_every_user_with_a_token_may_use_every_closed_group(api, close, db):
    """No per-user scopes: who holds a token is who the operator trusts (docs/security.md)."""
    from django.contrib.auth import get_user_model

    close()
    key = Token.objects.create(user=get_user_model().objects.create_user("bob")).key
    assert api.get("/models", **token_header(key)).status_code == 200
    assert api.post("/datasets", {"data": [1.0]}, format="json", **token_header(key)).status_code == 201
