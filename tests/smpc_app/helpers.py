"""Addresses, a database read-back and the registrations as a resource of the shared id cases
(tests/api_cases.py), for the encrypted-model tests."""

import pytest

from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode
from tests.api_cases import ResourceCases

ALICE = "http://alice.example:5000"
BOB = "http://bob.example:5000"
CAROL = "http://carol.example:5000"
CRYPTO = "http://crypto.example:5000"


def stored_nodes(model_id: str) -> dict[str, list[str]]:
    """The node URLs the database holds for a registration, by role, in position order."""
    rows = NodeAssignment.objects.filter(registration__model_id=model_id).order_by("position")
    nodes: dict[str, list[str]] = {"workers": [], "crypto_provider": []}
    for role, url in rows.values_list("role", "node__url"):
        nodes["workers" if role == NodeAssignment.Role.WORKER else "crypto_provider"].append(url)
    return nodes


class EncryptedModelCases(ResourceCases):
    """A registration: a row, its node assignments and the worker rows they use, made by POST
    /encrypted-models with workers Alice and Bob and crypto provider CRYPTO."""

    model = EncryptedModel
    id_column = "model_id"
    id_field = "model_id"
    not_found = "Encrypted model not found."

    @pytest.fixture
    def make(self, register):
        return lambda model_id: register(model_id)

    def related_state(self) -> dict:
        return {
            "assignments": NodeAssignment.objects.count(),
            "nodes": sorted(WorkerNode.objects.values_list("url", flat=True)),
        }


class PeerNode:
    """Another node of a test: its own key pair (in `folder`), its address, and requests signed with its key."""

    def __init__(self, folder, url: str) -> None:
        from smpc_app.identity import KEY_FILE, load_or_create

        self.url = url
        self.identity = load_or_create(folder / KEY_FILE)[0]
        self.public_key = self.identity.public_key

    def trusted(self):
        """Make the node under test trust this one (as its operator would with manage.py smpc_trust)."""
        from smpc_app.models import TrustedNode

        return TrustedNode.objects.create(url=self.url, public_key=self.public_key, label="test peer")

    def headers(
        self,
        body: bytes,
        *,
        purpose: str,
        model_id: str,
        session_id: str,
        party: int = 0,
        round_number: int = 0,
        recipient: str | None = None,
        timestamp: int | None = None,
        length: int | None = None,
    ) -> dict[str, str]:
        """Headers signing `body` from this node to the node under test (or to `recipient`); with `length`,
        signed as if the body were that long (for bodies the node must refuse without reading)."""
        from smpc_app.identity import node_identity
        from smpc_app.nodeauth import MESSAGE_HEADER, SIGNATURE_HEADER, sign_request, signed_text

        headers, _signature = sign_request(
            purpose=purpose,
            recipient=recipient or node_identity().public_key,
            model_id=model_id,
            session_id=session_id,
            party=party,
            round_number=round_number,
            body=body,
            identity=self.identity,
            timestamp=timestamp,
        )
        if length is not None:
            fields = headers[MESSAGE_HEADER].split(" ")
            fields[9] = str(length)
            text = " ".join(fields)
            headers = {MESSAGE_HEADER: text, SIGNATURE_HEADER: self.identity.sign(signed_text(text))}
        return headers


class UntouchedBody:
    """A WSGI input that counts what was read from it: a large body the node must refuse without reading."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = b"\0" * (1024 if size is None or size < 0 else min(size, 1024))
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def call_with_large_body(app, path: str, *, length: int, headers: dict[str, str]):
    """POST `path` to a WSGI app declaring a `length`-byte body: (status, JSON answer, bytes the app read)."""
    import io
    import json

    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    body = UntouchedBody()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": "application/octet-stream",
        "CONTENT_LENGTH": str(length),
        "wsgi.input": body,
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        chunks = app(environ, start_response)
        content = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer["status"], json.loads(content), body.bytes_read


class PartyZero:
    """A peer node playing party 0 of one exchange session with the node under test: round 0 signed with
    its key and carrying a fresh exchange key, later rounds signed with the session key both derive."""

    def __init__(self, peer: PeerNode, *, model_id: str, session_id: str) -> None:
        from smpc_app.nodeauth import new_exchange_key

        self.peer, self.model_id, self.session_id = peer, model_id, session_id
        self.exchange_key, self.exchange_public = new_exchange_key()
        self.key: bytes | None = None

    def message(self, round_number: int, tensors=None, **meta) -> bytes:
        """A round's packed message (with the exchange key in round 0)."""
        import torch

        from smpc_app.channels import SESSION_KEY_META
        from smpc_protocol import wire

        fields = {"session": self.session_id, "model_id": self.model_id, "round": round_number, **meta}
        if round_number == 0:
            fields.setdefault(SESSION_KEY_META, self.exchange_public)
        return wire.pack({"x": torch.arange(4)} if tensors is None else tensors, fields)

    def headers(self, body: bytes, round_number: int) -> dict[str, str]:
        """The round's signed headers: the node's key for round 0, the session key after."""
        from smpc_app.identity import node_identity
        from smpc_app.nodeauth import MESSAGE_HEADER, SIGNATURE_HEADER, request_label, session_mac

        if round_number == 0 or self.key is None:
            return self.peer.headers(
                body, purpose="exchange", model_id=self.model_id, session_id=self.session_id, round_number=round_number
            )
        header = request_label(
            purpose="exchange",
            sender=self.peer.public_key,
            recipient=node_identity().public_key,
            model_id=self.model_id,
            session_id=self.session_id,
            party=0,
            round_number=round_number,
            body=body,
        ).text()
        return {MESSAGE_HEADER: header, SIGNATURE_HEADER: session_mac(self.key, header)}

    def learn(self, first_reply: bytes) -> None:
        """Derive the session key from party 1's answer to round 0."""
        from smpc_app.channels import SESSION_KEY_META
        from smpc_app.identity import node_identity
        from smpc_app.nodeauth import session_key
        from smpc_protocol import wire

        self.key = session_key(
            self.exchange_key,
            wire.unpack_meta(first_reply).get(SESSION_KEY_META),
            sender=self.peer.public_key,
            recipient=node_identity().public_key,
            model_id=self.model_id,
            session_id=self.session_id,
        )
