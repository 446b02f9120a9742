"""The client keeps a connection to a node alive between calls, and never sends on one it should not.

A connection is kept only when its answer was read to its end and the node did not ask to close it; one the
node closed while idle is not used again; one the node closes as the next request arrives is replaced by a
new connection, the request sent again when its body can be; a forked child never speaks on its parent's.
"""

import contextlib
import http.server
import json
import threading

import pytest

from gridclient import GridNodeClient
from gridclient import transport as transport_module
from gridclient.errors import NodeUnreachable
from gridclient.transport import Transport


class KeepAliveNode:
    """A loopback HTTP/1.1 server that keeps connections open, counting them and the requests on each.

    `mode` changes how it treats a connection: "close" answers `Connection: close`; "drop_idle" closes each
    connection right after answering (without saying so); "drop_second" closes a connection, unanswered,
    when its second request arrives.
    """

    def __init__(self, body: bytes = b'{"models": []}', status: int = 200):
        self.mode = "keep"
        self.body = body
        self.status = status
        self.connections = 0
        self.requests: list[str] = []
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                node.connections += 1
                self.served = 0

            def _answer(self):
                self.served += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if node.mode == "drop_second" and self.served == 2:
                    self.close_connection = True
                    return
                node.requests.append(self.path)
                self.send_response(node.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(node.body)))
                if node.mode == "close":
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(node.body)
                if node.mode in ("close", "drop_idle"):
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _answer

            def handle(self):
                # A client that closed with an answer unread resets the connection: expected here.
                with contextlib.suppress(ConnectionResetError):
                    super().handle()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keepalive():
    node = KeepAliveNode()
    yield node
    node.close()


def test_calls_to_one_node_share_one_connection(keepalive):
    for _ in range(5):
        assert GridNodeClient(keepalive.url, progress=False).models() == []
    assert len(keepalive.requests) == 5
    assert keepalive.connections == 1


def test_a_connection_the_node_asked_to_close_is_not_kept(keepalive):
    keepalive.mode = "close"
    client = GridNodeClient(keepalive.url, progress=False)
    for _ in range(3):
        assert client.models() == []
    assert keepalive.connections == 3
    assert not transport_module._IDLE._connections.get(client._transport._idle_key())  # none was kept


def test_a_connection_the_node_closed_while_idle_is_not_used_again(keepalive):
    keepalive.mode = "drop_idle"
    client = GridNodeClient(keepalive.url, progress=False)
    for _ in range(3):
        assert client.models() == []
    assert (len(keepalive.requests), keepalive.connections) == (3, 3)


def test_a_request_the_node_dropped_on_a_kept_connection_is_sent_again_on_a_new_one(keepalive):
    keepalive.mode = "drop_second"
    client = GridNodeClient(keepalive.url, progress=False)
    assert client.models() == []
    assert client.models() == []  # its first connection was closed unanswered: sent again
    assert keepalive.requests == ["/models", "/models"]
    assert keepalive.connections == 2


def test_a_streamed_body_is_not_sent_twice_and_the_failure_names_the_node(keepalive):
    keepalive.mode = "drop_second"
    transport = Transport(keepalive.url, token=None, timeout=5)
    assert transport.json("GET", "/models") == {"models": []}
    with pytest.raises(NodeUnreachable) as raised, transport._exchange("POST", "/serve-model", {}, iter([b"{}"]), 2):
        pass
    assert keepalive.url in str(raised.value)
    assert keepalive.requests == ["/models"]


def test_an_error_answer_read_in_part_closes_its_connection(keepalive):
    keepalive.status = 404
    keepalive.body = json.dumps({"error": "Not found.", "pad": "x" * 200_000}).encode()  # past ERROR_BODY_LIMIT
    client = GridNodeClient(keepalive.url, progress=False)
    for _ in range(2):
        with pytest.raises(Exception, match="Not found|404"):
            client.models()
    assert keepalive.connections == 2


def test_a_forked_child_does_not_take_its_parents_connections(keepalive, monkeypatch):
    assert GridNodeClient(keepalive.url, progress=False).models() == []
    monkeypatch.setattr(transport_module._IDLE, "_pid", -1)  # as in a child forked after that call
    assert GridNodeClient(keepalive.url, progress=False).models() == []
    assert keepalive.connections == 2


def test_https_connections_are_kept_per_trust_setting(monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", "/a.pem")
    first = Transport("https://node.example:8443", token=None, timeout=5)._idle_key()
    monkeypatch.setenv("SSL_CERT_FILE", "/b.pem")
    second = Transport("https://node.example:8443", token=None, timeout=5)._idle_key()
    assert first != second
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert Transport("https://node.example:8443", token=None, timeout=5)._idle_key() is None
