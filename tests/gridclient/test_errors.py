"""How failures reach the caller: an unreachable node, the token and 401, 5xx, and answers off contract.

These come from a stub HTTP server on loopback; test_auth.py has the live node's own 401s.
"""

import pytest

from gridclient import (
    AuthenticationFailed,
    GridNodeClient,
    GridNodeError,
    NodeUnreachable,
    ServerError,
    Unauthorized,
)
from gridclient.errors import MODELS, InvalidRequest, ModelNotFound, NotFound


def test_it_raises_node_unreachable_naming_the_url(closed_port_url):
    client = GridNodeClient(closed_port_url)

    with pytest.raises(NodeUnreachable) as caught:
        client.models()

    assert caught.value.status is None
    assert caught.value.url == closed_port_url
    assert str(caught.value) == f"Could not reach the grid node at {closed_port_url}: connection refused " + (
        "(is the node running, and on this port?)"
    )


def test_it_raises_node_unreachable_for_a_name_that_does_not_resolve():
    with pytest.raises(NodeUnreachable, match="could not be resolved"):
        GridNodeClient("http://no-such-host.invalid:8000").models()


def test_it_raises_node_unreachable_when_the_node_does_not_answer_in_time(stub):
    stub.delay = 1.0

    with pytest.raises(NodeUnreachable, match="no answer within 0.2 seconds"):
        GridNodeClient(stub.url, timeout=0.2).models()


def test_it_refuses_a_url_that_is_not_http():
    with pytest.raises(ValueError, match="http://host:port"):
        GridNodeClient("ftp://example.org")


def test_it_sends_the_token_given_or_from_the_environment(stub, monkeypatch):
    stub.answer(200, {"success": True, "models": []})
    GridNodeClient(stub.url, token="s3cret").models()
    monkeypatch.setenv("GRIDNODE_TOKEN", "from-env")
    GridNodeClient(stub.url).models()
    GridNodeClient(stub.url, token="").models()

    sent = [request["headers"].get("Authorization") for request in stub.requests]
    assert sent == ["Token s3cret", "Token from-env", None]


def test_it_uses_the_url_from_the_environment(stub, monkeypatch):
    monkeypatch.setenv("GRIDNODE_URL", stub.url + "/")

    assert GridNodeClient().url == stub.url


def test_it_keeps_a_path_prefix_of_the_url(stub):
    stub.answer(200, {"success": True, "models": ["m"]})

    assert GridNodeClient(stub.url + "/grid/").models() == ["m"]
    assert stub.requests[0]["path"] == "/grid/models"


def test_it_raises_unauthorized_for_401(stub):
    stub.answer(401, {"error": "Authentication credentials were not provided."})

    with pytest.raises(Unauthorized) as caught:
        GridNodeClient(stub.url).models()

    assert caught.value.status == 401
    assert caught.value.message == "Authentication credentials were not provided."
    assert AuthenticationFailed is Unauthorized


def test_it_raises_server_error_for_5xx_with_or_without_json(stub):
    stub.answer(500, {"error": "Internal server error."})
    with pytest.raises(ServerError, match=r"^Internal server error. \(HTTP 500\)$"):
        GridNodeClient(stub.url).models()

    stub.answer(502, b"<html>Bad Gateway</html>", content_type="text/html")
    with pytest.raises(ServerError) as caught:
        GridNodeClient(stub.url).models()
    assert (caught.value.status, caught.value.message) == (502, "HTTP 502 Bad Gateway")


def test_it_raises_server_error_for_a_success_that_is_not_json(stub):
    stub.answer(200, b"<html>a proxy page</html>", content_type="text/html")

    with pytest.raises(ServerError, match="not JSON"):
        GridNodeClient(stub.url).models()


def test_it_raises_server_error_for_an_answer_without_the_contract_keys(stub):
    stub.answer(200, {"success": True})

    with pytest.raises(ServerError, match="no 'models'"):
        GridNodeClient(stub.url).models()


def test_every_error_is_a_grid_node_error_with_a_status():
    for status, kind in [(400, InvalidRequest), (404, ModelNotFound), (418, GridNodeError), (503, ServerError)]:
        error = MODELS.exception(status, "message")
        assert type(error) is kind
        assert isinstance(error, GridNodeError)
        assert error.status == status
    assert issubclass(ModelNotFound, NotFound)


def test_it_keeps_credentials_in_the_url_out_of_messages(closed_port_url):
    port = closed_port_url.rsplit(":", 1)[1]
    client = GridNodeClient(f"http://user:secret@127.0.0.1:{port}")

    with pytest.raises(NodeUnreachable) as caught:
        client.models()

    assert "secret" not in str(caught.value)
    assert client.url == closed_port_url


def test_it_refuses_a_json_answer_to_a_raw_download(stub, tmp_path):
    stub.answer(200, {"serialized_model": "..."})

    with pytest.raises(ServerError, match="JSON instead of the raw archive"):
        GridNodeClient(stub.url).download_archive("m", tmp_path / "m.pt")

    assert list(tmp_path.glob("*m.pt*")) == []
