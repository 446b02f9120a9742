"""`manage.py create_token USERNAME [--create-user] [--regenerate]` prints a key that opens closed groups."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from tests.auth.conftest import token_header

pytestmark = pytest.mark.django_db


def create_token(*args) -> str:
    out = io.StringIO()
    call_command("create_token", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_user_and_prints_a_key_that_works(api, close):
    close()
    key = create_token("carol", "--create-user").strip()

    user = get_user_model().objects.get(username="carol")
    assert Token.objects.get(user=user).key == key
    assert len(key) == 40
    assert not user.has_usable_password()  # a token user, not an admin login
    assert api.get("/models", **token_header(key)).status_code == 200


def test_it_prints_the_same_key_again_unless_told_to_regenerate(api, close):
    close()
    first = create_token("carol", "--create-user").strip()
    assert create_token("carol").strip() == first

    second = create_token("carol", "--regenerate").strip()

    assert second != first
    assert api.get("/models", **token_header(first)).status_code == 401
    assert api.get("/models", **token_header(second)).status_code == 200


def test_an_unknown_user_is_refused_without_create_user():
    with pytest.raises(CommandError, match="--create-user"):
        create_token("nobody")
    assert not get_user_model().objects.filter(username="nobody").exists()


def test_an_existing_user_gets_a_token_and_keeps_their_password(admin_user):
    key = create_token("admin").strip()
    admin_user.refresh_from_db()
    assert Token.objects.get(user=admin_user).key == key
    assert admin_user.check_password("password")


def test_an_invalid_username_or_an_inactive_user_is_refused():
    with pytest.raises(CommandError):
        create_token("no spaces allowed", "--create-user")
    get_user_model().objects.create_user("gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        create_token("gone")


def test_drfs_own_command_is_there_too():
    get_user_model().objects.create_user("dave")
    buffer = io.StringIO()
    call_command("drf_create_token", "dave", stdout=buffer)
    assert Token.objects.get(user__username="dave").key in buffer.getvalue()
