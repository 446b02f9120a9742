"""The admin always needs a staff login, whatever the switches say and whatever token is sent."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from tests.auth.conftest import token_header

pytestmark = pytest.mark.django_db

PAGES = ["/admin/", "/admin/models_app/hostedmodel/", "/admin/datasets_app/dataset/", "/admin/authtoken/tokenproxy/"]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, close, page, closed):
    if closed:
        close()
    response = client.get(page)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("page", PAGES)
def test_a_token_does_not_open_the_admin(client, token, page):
    response = client.get(page, **token_header(token.key))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_user_who_is_not_staff_cannot_log_in(client, token):
    token.user.set_password("a long enough password")
    token.user.save()

    response = client.post("/admin/login/", {"username": "alice", "password": "a long enough password"})

    assert response.status_code == 200  # the form again, with its error
    assert "staff account" in response.content.decode()
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("page", PAGES)
def test_staff_see_every_page(admin_client, page):
    assert admin_client.get(page).status_code == 200


def test_operators_create_and_list_tokens_in_the_admin(admin_client, api, close):
    user = get_user_model().objects.create_user("erin")

    response = admin_client.post("/admin/authtoken/tokenproxy/add/", {"user": user.pk})

    assert response.status_code == 302, response.content
    key = Token.objects.get(user=user).key
    assert key in admin_client.get("/admin/authtoken/tokenproxy/").content.decode()
    close()
    assert api.get("/models", **token_header(key)).status_code == 200
