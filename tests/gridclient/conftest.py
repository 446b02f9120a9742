"""Fixtures for the client tests: a live node (pytest-django's live server) and a client pointed at it."""

import socket

import pytest

from gridclient import GridNodeClient
from tests.conftest import small_mlp
from tests.gridclient.helpers import StubNode


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that moves hundreds of MB (deselect with -m 'not slow')")


PROXY_VARIABLES = [
    spelling for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for spelling in (name, name.upper())
]


@pytest.fixture(autouse=True)
def no_client_environment(monkeypatch):
    """The tests say which node and token they use; the developer's environment does not leak in."""
    for name in ("GRIDNODE_URL", "GRIDNODE_TOKEN", *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def node(live_server) -> str:
    return live_server.url


@pytest.fixture
def client(node) -> GridNodeClient:
    return GridNodeClient(node, progress=False)


@pytest.fixture
def mlp(client):
    """The reference MLP hosted as `mlp`, open for download and inference; answers the module."""
    module = small_mlp()
    client.serve_model(module, "mlp", allow_download=True, allow_remote_inference=True)
    return module


@pytest.fixture
def closed_port_url() -> str:
    """The URL of a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def stub():
    """A loopback HTTP server with one canned answer (see `StubNode`)."""
    node = StubNode()
    yield node
    node.close()
