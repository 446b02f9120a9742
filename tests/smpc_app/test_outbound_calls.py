"""Whom a worker calls and what it tells its client about them: only nodes this node trusts, and a 502 that
names the node and how it failed (unreachable, timed out, refused, bad answer), never the node's words.

Before: a worker POSTed to any address a registration named (any host and port), and its 502 told
"Connection refused" from "Connection reset by peer" (closed ports from Redis or PostgreSQL) and passed on
the target's status and up to 500 characters of its `error` text.
"""

import contextlib
import http.server
import json
import secrets
import select
import socket
import struct
import threading

import pytest
import torch

from smpc_app import nodeauth
from smpc_protocol import wire
from tests.smpc_app.helpers import PeerNode

pytestmark = pytest.mark.django_db

ME = "http://127.0.0.1:1"


class Answer(http.server.BaseHTTPRequestHandler):
    """A node that answers every POST as its server's `behaviour` says."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body, signer = self.server.answer()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status != 200 else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if signer is not None:
            signed = nodeauth.sign_reply(
                request_signature=self.headers[nodeauth.SIGNATURE_HEADER], status=status, body=body, identity=signer
            )
            for name, value in signed.items():
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def fake_provider():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def listener():
    """A TCP port that accepts connections and never answers: (socket, URL)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def as_party_0(settings, register, upload_share, tmp_path_factory):
    """This node as party 0 of 'shared' whose party 1 is trusted and whose provider is at `provider_url`."""
    settings.GRIDNODE_SMPC_TIMEOUT = 1
    keys = tmp_path_factory.mktemp("keys")

    def host(provider_url: str, *, trust_provider: bool = True) -> PeerNode:
        peer, provider = PeerNode(keys / "peer", "http://127.0.0.1:2"), PeerNode(keys / "provider", provider_url)
        register("shared", workers=[ME, peer.url], crypto_provider=[provider.url])
        upload_share("shared", role="worker", party=0, registered=True, allow_remote_inference=True)
        peer.trusted()
        if trust_provider:
            provider.trusted()
        return provider

    return host


def evaluate(api, session: str):
    message = wire.pack({"x": torch.zeros(1, 4, dtype=torch.int64)}, {"session": session})
    return api.post("/encrypted-models/shared/inference", message, content_type="application/octet-stream")


def pending_connections(sock: socket.socket) -> int:
    """How many connections wait in a listening socket's queue (connect() returns once they are queued)."""
    count = 0
    while select.select([sock], [], [], 0)[0]:
        connection, _ = sock.accept()
        connection.close()
        count += 1
    return count


def test_it_never_calls_a_node_it_does_not_trust(api, as_party_0, listener):
    sock, url = listener
    as_party_0(url, trust_provider=False)

    response = evaluate(api, secrets.token_hex(16))

    assert response.status_code == 409
    assert f"names {url} as its crypto provider, a node this node does not trust" in response.json()["error"]
    assert pending_connections(sock) == 0


def test_a_trusted_nodes_error_is_named_by_status_without_its_words(api, as_party_0, fake_provider):
    server, url = fake_provider
    provider = as_party_0(url)
    words = json.dumps({"error": "ERR wrong number of arguments for 'get' command (redis 7.2 at 10.0.0.5)"})
    server.answer = lambda: (500, words.encode(), provider.identity)
    session = secrets.token_hex(16)

    response = evaluate(api, session)

    assert response.status_code == 502
    assert response.json()["error"] == (
        f"The crypto provider at {url} refused the randomness of session {session} (HTTP 500)."
    )


@pytest.mark.parametrize("failure", ["refused", "reset"])
def test_refused_and_reset_connections_read_the_same(api, as_party_0, listener, failure):
    sock, url = listener
    if failure == "refused":
        sock.close()  # nothing listens there any more: connections are refused
    else:

        def reset():
            with contextlib.suppress(OSError):
                connection, _ = sock.accept()
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.recv(1)
                connection.close()  # with linger 0: a reset

        threading.Thread(target=reset, daemon=True).start()
    as_party_0(url)
    session = secrets.token_hex(16)

    response = evaluate(api, session)

    assert response.status_code == 502
    assert response.json()["error"] == (
        f"The crypto provider at {url} is unreachable: the randomness of session {session} "
        "could not be sent or answered."
    )


def test_an_answer_not_signed_by_the_node_is_a_bad_answer(api, as_party_0, fake_provider, tmp_path):
    server, url = fake_provider
    as_party_0(url)
    impostor = PeerNode(tmp_path / "impostor", url).identity
    body = wire.pack({}, {"bundle_id": "b" * 32})

    for signer in (None, impostor):
        server.answer = lambda signer=signer: (200, body, signer)
        response = evaluate(api, secrets.token_hex(16))
        assert response.status_code == 502
        assert f"The crypto provider at {url} gave a bad answer" in response.json()["error"]
        assert "not signed by its key" in response.json()["error"]


def test_a_silent_node_is_named_as_timed_out(api, as_party_0, listener):
    _sock, url = listener
    as_party_0(url)

    response = evaluate(api, secrets.token_hex(16))

    assert response.status_code == 504
    assert response.json()["error"].startswith(f"The crypto provider at {url} timed out")
