"""Proxies: the client reaches the node through HTTP_PROXY / HTTPS_PROXY / ALL_PROXY unless NO_PROXY
lists its host, as `requests` does. The "proxy" here is a recording HTTP server (tests/gridclient/hostile.py).
"""

import base64

import pytest

from gridclient import GridNodeClient, NodeUnreachable, cli
from gridclient.transport import proxy_for
from tests.gridclient.hostile import HostileNode, Route

NODE = "http://node.invalid:8000"


@pytest.fixture
def proxy():
    recorder = HostileNode({f"{NODE}/models": Route(b'{"models": ["through the proxy"]}')})
    yield recorder
    recorder.close()


def test_an_http_node_is_asked_through_http_proxy_by_its_whole_url(proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)

    assert GridNodeClient(NODE, token="secret", progress=False).models() == ["through the proxy"]

    [(method, target, headers)] = proxy.requests
    assert (method, target) == ("GET", f"{NODE}/models")
    assert headers["Host"] == "node.invalid:8000"
    assert headers["Authorization"] == "Token secret"
    assert "Proxy-Authorization" not in headers


def test_the_proxy_credentials_in_its_url_are_sent_to_it(proxy, monkeypatch):
    monkeypatch.setenv("http_proxy", proxy.url.replace("http://", "http://ann:p%40ss@"))

    GridNodeClient(NODE, progress=False).models()

    [(_, _, headers)] = proxy.requests
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"ann:p@ss").decode()


def test_all_proxy_is_the_fallback_and_a_bare_host_port_is_http(proxy, monkeypatch):
    monkeypatch.setenv("ALL_PROXY", proxy.url.removeprefix("http://"))

    assert GridNodeClient(NODE, progress=False).models() == ["through the proxy"]


def test_an_https_node_is_reached_through_a_connect_tunnel(proxy, monkeypatch):
    """The proxy sees where the tunnel goes, never the requests inside it (nor the token)."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://ann:pw@"))
    proxy.routes["node.invalid:8443"] = Route(status=403)

    with pytest.raises(NodeUnreachable) as caught:
        GridNodeClient("https://node.invalid:8443", token="secret", progress=False).models()

    [(method, target, headers)] = proxy.requests
    assert (method, target) == ("CONNECT", "node.invalid:8443")
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()
    assert "Authorization" not in headers
    assert "403" in str(caught.value)
    assert str(caught.value).endswith(f"(through the proxy at {proxy.url.removeprefix('http://')})")


def test_http_proxy_is_not_used_for_an_https_node(proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)

    assert proxy_for("https://node.invalid:8443") is None


@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*", "127.0.0.0/8", " .example.org , 127.0.0.1 "]
)
def test_no_proxy_sends_the_node_direct(no_proxy, monkeypatch):
    node = HostileNode({"/models": Route(b'{"models": ["direct"]}')})
    try:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", no_proxy)

        assert GridNodeClient(node.url, progress=False).models() == ["direct"]
    finally:
        node.close()


def test_no_proxy_matches_subdomains_and_leaves_other_hosts_to_the_proxy(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "example.org,10.0.0.0/8")

    assert proxy_for("http://grid.example.org:8000") is None
    assert proxy_for("http://10.1.2.3:8000") is None
    assert proxy_for("http://grid.example.com:8000") == ("proxy.internal", 3128, None)
    assert proxy_for("http://11.1.2.3:8000") == ("proxy.internal", 3128, None)


def test_an_unreachable_proxy_is_named_and_exits_3(monkeypatch, capsys):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")

    code = cli.main(["--url", NODE, "models"])

    assert code == cli.UNREACHABLE
    assert capsys.readouterr().err == (
        f"error: Could not reach the grid node at {NODE}: connection refused (is the node running, and on this "
        "port?) (through the proxy at 127.0.0.1:9)\n"
    )


@pytest.mark.parametrize("url", ["https://proxy.internal:3128", "socks5://proxy.internal:1080"])
def test_a_proxy_that_is_not_plain_http_is_refused_up_front(url, monkeypatch, capsys):
    monkeypatch.setenv("HTTPS_PROXY", url)

    with pytest.raises(ValueError, match="reaches proxies over plain http:// only"):
        GridNodeClient("https://node.invalid", progress=False)
    assert cli.main(["--url", "https://node.invalid", "models"]) == cli.USAGE
