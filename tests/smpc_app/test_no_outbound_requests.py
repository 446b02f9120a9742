"""The node never contacts a worker's address: registering, showing, searching and deleting open no socket."""

import socket

import pytest

from smpc_app.models import EncryptedModel

pytestmark = pytest.mark.django_db

UNREACHABLE = ["http://10.255.255.1:9", "http://no-such-host.invalid:5000"]
PROVIDER = ["http://[fd00::1]:7"]


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any attempt to resolve a name or open a connection from Python code."""
    attempts = []

    def refuse(name):
        def call(*args, **kwargs):
            attempts.append(name)
            raise AssertionError(f"the node tried to reach the network ({name})")

        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.setattr(socket, "gethostbyname", refuse("socket.gethostbyname"))
    return attempts


def test_the_guard_catches_a_connection(no_network):
    with pytest.raises(AssertionError, match="reach the network"):
        socket.create_connection(("10.255.255.1", 9), timeout=0.01)
    assert no_network == ["socket.create_connection"]


def test_registration_and_search_make_no_network_call(api, no_network):
    body = {"model_id": "offline", "workers": UNREACHABLE, "crypto_provider": PROVIDER}

    assert api.post("/encrypted-models", body, format="json").status_code == 201
    search = api.post("/search-encrypted-models", {"model_id": "offline"}, format="json")
    assert api.get("/encrypted-models/offline").status_code == 200
    assert api.get("/encrypted-models").status_code == 200
    assert api.delete("/encrypted-models/offline").status_code == 204

    assert search.status_code == 200
    assert search.json() == {"workers": UNREACHABLE, "crypto_provider": PROVIDER}
    assert not EncryptedModel.objects.exists()
    assert no_network == []


def test_the_admin_makes_no_network_call(admin_client, no_network):
    data = {
        "model_id": "offline",
        "assignments-TOTAL_FORMS": "3",
        "assignments-INITIAL_FORMS": "0",
        "assignments-0-url": UNREACHABLE[0],
        "assignments-0-role": "worker",
        "assignments-1-url": UNREACHABLE[1],
        "assignments-1-role": "worker",
        "assignments-2-url": PROVIDER[0],
        "assignments-2-role": "crypto_provider",
    }

    assert admin_client.post("/admin/smpc_app/encryptedmodel/add/", data).status_code == 302
    assert EncryptedModel.objects.get().model_id == "offline"
    assert no_network == []
