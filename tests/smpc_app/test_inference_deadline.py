"""POST /encrypted-models/<id>/inference ends within GRIDNODE_INFERENCE_TIMEOUT of its arrival, all rounds
included: a peer that answers every round just before the per-round timeout (GRIDNODE_SMPC_TIMEOUT) gets
the worker's 504 naming the limit at the deadline, not after one round timeout after another.

The crypto provider and the peer are fakes in this process: an HTTP server for the provider and for a
party 1 that echoes party 0's messages, and, for a party 1 under test, a real party 0 evaluation that
sends its rounds through this node's exchange path (`channels.deliver`).
"""

import contextlib
import http.server
import secrets
import threading
import time

import pytest
import torch

from smpc_app import channels, nodeauth
from smpc_app.identity import node_identity
from smpc_app.runtime import PARTY_ZERO_KEY_META
from smpc_protocol import engine, randomness, wire
from tests.smpc_app.helpers import PartyZero, PeerNode

pytestmark = pytest.mark.django_db

ROUND_TIMEOUT = 2  # GRIDNODE_SMPC_TIMEOUT
DEADLINE = 3  # GRIDNODE_INFERENCE_TIMEOUT
# A peer's answer to every round: just within the per-round timeout, so no round ever times out.
SLOW = ROUND_TIMEOUT - 0.2
# What the worker may take past the deadline to close the session and answer: a bound, not a speed claim.
MARGIN = 2
BUNDLE_ID = "b" * 32
SEED = bytes(32)


def limit_message(seconds: int) -> str:
    return f"did not finish within this node's limit of {seconds} seconds (GRIDNODE_INFERENCE_TIMEOUT)"


def dealt(shared_model, *, party: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """A party's half of one session's randomness, as the crypto provider deals it."""
    return randomness.party_bundle(
        spec=shared_model.spec, provider_part=shared_model.provider_part, batch=batch, seed=SEED, party=party
    )


def provider_answer(shared_model, *, party: int) -> bytes:
    """The crypto provider's answer to one party: party 1's half, or for party 0 the key its half is drawn from."""
    if party == 0:
        key = SEED[: randomness.PARTY_ZERO_KEY_BYTES]
        return wire.pack({}, {"bundle_id": BUNDLE_ID, PARTY_ZERO_KEY_META: key.hex()})
    return wire.pack(dealt(shared_model, party=party), {"bundle_id": BUNDLE_ID})


class FakeNodeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive, as party 0 keeps its connection to party 1 for a session

    def setup(self):
        super().setup()
        self.server.connections_changed(+1)

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()
        self.server.connections_changed(-1)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        provider = self.path.startswith("/provider/")
        if provider:
            time.sleep(self.server.provider_delay)
            _, meta = wire.unpack(body)
            reply = provider_answer(self.server.shared_model, party=meta["party"])
        else:
            time.sleep(self.server.peer_delay)
            # The echo has party 1's names, shapes and agreement digest: party 0 takes it for its peer's.
            tensors, meta = wire.unpack(body)
            reply_meta = {"session": meta["session"], "round": meta["round"]}
            if meta["round"] == 0:
                reply_meta[channels.SESSION_KEY_META] = self.server.start_session(meta)
            reply = wire.pack(tensors, reply_meta)
        signer = self.server.provider if provider else self.server.peer
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(reply)))
        request_signature = self.headers[nodeauth.SIGNATURE_HEADER]
        if provider or meta["round"] == 0:
            signed = nodeauth.sign_reply(
                request_signature=request_signature, status=200, body=reply, identity=signer.identity
            )
        else:
            signed = nodeauth.session_reply_headers(
                self.server.session_keys[meta["session"]],
                sender=signer.public_key,
                request_signature=request_signature,
                status=200,
                body=reply,
            )
        for name, value in signed.items():
            self.send_header(name, value)
        if provider:
            # Not kept alive, so that the connections left open are the peer's alone.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format, *args):
        pass


class FakeNodes(http.server.ThreadingHTTPServer):
    """The crypto provider (under /provider) and an echoing party 1 (under /peer), each as slow as told."""

    daemon_threads = True

    def __init__(self, shared_model, keys_folder):
        super().__init__(("127.0.0.1", 0), FakeNodeHandler)
        self.shared_model = shared_model
        self.provider = PeerNode(keys_folder / "provider", f"{self.url}/provider")
        self.peer = PeerNode(keys_folder / "peer", f"{self.url}/peer")
        self.session_keys: dict[str, bytes] = {}
        self.provider_delay = 0.0
        self.peer_delay = 0.0
        self.open_connections = 0
        self.changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start_session(self, first_meta: dict) -> str:
        """The fake party 1's side of a session's key exchange: its public exchange key for the answer."""
        private, public = nodeauth.new_exchange_key()
        self.session_keys[first_meta["session"]] = nodeauth.session_key(
            private,
            first_meta[channels.SESSION_KEY_META],
            sender=node_identity().public_key,
            recipient=self.peer.public_key,
            model_id="shared",
            session_id=first_meta["session"],
        )
        return public

    def connections_changed(self, by: int) -> None:
        with self.changed:
            self.open_connections += by
            self.changed.notify_all()

    def wait_until_no_connections(self, within: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.open_connections == 0, timeout=within)

    def handle_error(self, request, client_address):
        pass  # a worker that gave up closed the connection under a late answer: expected here


class SlowPartyZero(threading.Thread):
    """Party 0's real evaluation, sending each round `delay` s late to this node's party 1 via `deliver`."""

    def __init__(self, shared_model, peer: PeerNode, *, session: str, delay: float):
        super().__init__(daemon=True)
        self.shared_model, self.session, self.delay = shared_model, session, delay
        self.sender = PartyZero(peer, model_id="shared", session_id=session)
        self.round = 0
        self.error: Exception | None = None

    def run(self):
        spec = self.shared_model.spec
        evaluation = engine.Evaluation(
            spec=spec,
            part=self.shared_model.worker_parts[0],
            party=0,
            bundle=dealt(self.shared_model, party=0),
            channel=self,
            agreement=f"shared|{spec.digest()}|1|{BUNDLE_ID}",
        )
        try:
            evaluation.run(torch.zeros(1, 4, dtype=torch.int64))
        except Exception as error:
            self.error = error

    def exchange(self, payload):
        time.sleep(self.delay)
        message = self.sender.message(self.round, payload)
        headers = self.sender.headers(message, self.round)
        header, signature = headers[nodeauth.MESSAGE_HEADER], headers[nodeauth.SIGNATURE_HEADER]
        label = nodeauth.check_request(
            purpose="exchange", header=header, signature=signature, content_length=len(message), limit=len(message)
        )
        reply, _ = channels.deliver(label=label, header=header, signature=signature, read_body=lambda: message)
        if self.round == 0:
            self.sender.learn(reply)
        tensors, _ = wire.unpack(reply)
        self.round += 1
        return tensors


@pytest.fixture(autouse=True)
def smpc(settings):
    settings.GRIDNODE_SMPC_TIMEOUT = ROUND_TIMEOUT
    settings.GRIDNODE_INFERENCE_TIMEOUT = DEADLINE
    settings.GRIDNODE_SMPC_MAX_SESSIONS = 1  # so a slot the deadline did not give back shows as a 503


@pytest.fixture
def fake_nodes(shared_model, tmp_path_factory):
    server = FakeNodes(shared_model, tmp_path_factory.mktemp("fake-node-keys"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker(register, upload_share, fake_nodes):
    """This node as party `party` of 'shared', with the fake provider and peer."""

    def host(party: int):
        me, peer = "http://127.0.0.1:1", fake_nodes.peer.url
        workers = [me, peer] if party == 0 else [peer, me]
        register("shared", workers=workers, crypto_provider=[fake_nodes.provider.url])
        fake_nodes.peer.trusted()
        fake_nodes.provider.trusted()
        upload_share("shared", role="worker", party=party, registered=True, allow_remote_inference=True)

    return host


def evaluate(api, session: str):
    message = wire.pack({"x": torch.zeros(1, 4, dtype=torch.int64)}, {"session": session})
    return api.post("/encrypted-models/shared/inference", message, content_type="application/octet-stream")


def timed_evaluate(api, session: str):
    started = time.monotonic()
    response = evaluate(api, session)
    return response, time.monotonic() - started


def test_it_stops_party_0_at_the_deadline_when_the_peer_answers_every_round_just_in_time(
    api, worker, fake_nodes, shared_model
):
    worker(0)
    fake_nodes.peer_delay = SLOW
    assert engine.count_rounds(shared_model.spec) * SLOW > DEADLINE + MARGIN  # without the deadline: a 200, late

    response, elapsed = timed_evaluate(api, secrets.token_hex(16))

    assert response.status_code == 504
    assert limit_message(DEADLINE) in response.json()["error"]
    assert elapsed < DEADLINE + MARGIN
    # The session's connection to the peer is closed (once the peer's late answer for the cut round is out).
    assert fake_nodes.wait_until_no_connections(within=SLOW + 1)
    # And the slot is free again: a prompt peer gets a whole inference through.
    fake_nodes.peer_delay = 0.0
    assert evaluate(api, secrets.token_hex(16)).status_code == 200


def test_it_stops_party_1_at_the_deadline_when_party_0_sends_every_round_just_in_time(
    api, worker, shared_model, fake_nodes
):
    worker(1)
    session = secrets.token_hex(16)
    party_zero = SlowPartyZero(shared_model, fake_nodes.peer, session=session, delay=SLOW)
    party_zero.start()

    response, elapsed = timed_evaluate(api, session)

    assert response.status_code == 504
    assert limit_message(DEADLINE) in response.json()["error"]
    assert elapsed < DEADLINE + MARGIN
    party_zero.join(timeout=ROUND_TIMEOUT + SLOW + 1)
    assert party_zero.error is not None  # its late round found the session over
    # The session's socket is free.
    channels.SessionMailbox(
        session_id=session, model_id="shared", peer_key=fake_nodes.peer.public_key, traffic=channels.Traffic()
    ).close()
    session = secrets.token_hex(16)
    prompt = SlowPartyZero(shared_model, fake_nodes.peer, session=session, delay=0.0)
    prompt.start()
    assert evaluate(api, session).status_code == 200
    prompt.join(timeout=5)
    assert prompt.error is None


def test_the_deadline_also_cuts_the_wait_for_the_crypto_provider(api, worker, fake_nodes, settings):
    settings.GRIDNODE_SMPC_TIMEOUT = 4
    settings.GRIDNODE_INFERENCE_TIMEOUT = 2
    worker(0)
    fake_nodes.provider_delay = 3  # within the per-request timeout, past the deadline

    response, elapsed = timed_evaluate(api, secrets.token_hex(16))

    assert response.status_code == 504
    assert limit_message(2) in response.json()["error"]
    assert elapsed < 2 + MARGIN


def test_a_round_timeout_before_the_deadline_keeps_its_own_message(api, worker, fake_nodes, settings):
    settings.GRIDNODE_SMPC_TIMEOUT = 1
    settings.GRIDNODE_INFERENCE_TIMEOUT = 30
    worker(0)
    fake_nodes.peer_delay = 1 + channels.ANSWER_MARGIN_SECONDS + 0.5  # past party 0's per-round wait

    response = evaluate(api, secrets.token_hex(16))

    assert response.status_code == 504
    assert "timed out: no answer to round 0 of session" in response.json()["error"]
    assert "within 3 s" in response.json()["error"]
