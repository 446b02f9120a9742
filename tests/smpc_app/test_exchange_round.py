"""POST /smpc/exchange: party 0's signed message for a round reaches this node's evaluation of the session
(this node is party 1), once, and the answer is party 1's message, signed; through the WSGI fast path and
through Django alike. Replays and strangers are refused from the headers, before the body is read."""

import json
import secrets
import threading

import pytest
import torch

from gridnode.auth import GROUPS
from gridnode.errors import BadGateway
from gridnode.wsgi import application
from smpc_app.channels import SessionMailbox, Traffic
from smpc_app.identity import node_identity
from smpc_app.models import ExchangeSession
from smpc_app.nodeauth import (
    REPLY_HEADER,
    REPLY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    reply_is_signed,
    session_reply_matches,
)
from smpc_protocol import wire
from tests.smpc_app.helpers import PartyZero, call_with_large_body
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

PATH = "/smpc/exchange"
MODEL = "m"


@pytest.fixture(autouse=True)
def party_1(settings, upload_share, peers):
    """This node holds party 1's share of MODEL (workers: alice, then this node); alice is trusted."""
    settings.GRIDNODE_SMPC_TIMEOUT = 1
    upload_share(MODEL, role="worker", party=1, allow_remote_inference=True)
    peers["alice"].trusted()


@pytest.fixture
def alice(peers):
    return peers["alice"]


def party_zero(peer, session: str | None = None) -> PartyZero:
    return PartyZero(peer, model_id=MODEL, session_id=session or secrets.token_hex(16))


def post(body: bytes, headers: dict, path: str = PATH):
    """POST a message through the node's WSGI stack (the fast path)."""
    return call_wsgi(application, "POST", path, body, content_type="application/octet-stream", headers=headers)


def send(sender: PartyZero, round_number: int = 0, *, path: str = PATH, **meta):
    """Party 0's message for a round, signed as that round is, through the fast path; round 0's answer
    gives the sender its session key. Answers (status, headers, body, request headers)."""
    body = sender.message(round_number, **meta)
    headers = sender.headers(body, round_number)
    status, answer_headers, content = post(body, headers, path)
    if round_number == 0 and status == 200:
        sender.learn(content)
    return status, answer_headers, content, headers


class Evaluation(threading.Thread):
    """This node's side of a session: answers its rounds with `replies`, keeps what it received or raised."""

    def __init__(self, session: str, peer_key: str, replies: list[dict]):
        super().__init__(daemon=True)
        self.mailbox = SessionMailbox(session_id=session, model_id=MODEL, peer_key=peer_key, traffic=Traffic())
        self.replies, self.received, self.error = replies, [], None

    def run(self):
        try:
            for reply in self.replies:
                self.received.append(self.mailbox.exchange(reply))
        except Exception as error:
            self.error = error
        finally:
            self.mailbox.close()


@pytest.mark.parametrize("path", [PATH, PATH + "/"])
def test_it_hands_the_message_to_the_session_and_answers_its_reply_signed(alice, path):
    sender = party_zero(alice)
    evaluation = Evaluation(
        sender.session_id, alice.public_key, [{"y": torch.tensor([7, 8])}, {"y": torch.tensor([9])}]
    )
    evaluation.start()

    status, answer_headers, content, headers = send(sender, path=path)
    second = send(sender, 1, path=path)
    evaluation.join(timeout=5)

    assert status == 200
    assert answer_headers["content-type"] == "application/octet-stream"
    tensors, meta = wire.unpack(content)
    assert torch.equal(tensors["y"], torch.tensor([7, 8]))
    assert (meta["session"], meta["round"]) == (sender.session_id, 0)
    assert torch.equal(evaluation.received[0]["x"], torch.arange(4))
    # Round 0's answer is signed with the node's key, later ones with the session key.
    assert reply_is_signed(
        sender=node_identity().public_key,
        request_signature=headers[SIGNATURE_HEADER],
        status=200,
        header=answer_headers[REPLY_HEADER.lower()],
        signature=answer_headers[REPLY_SIGNATURE_HEADER.lower()],
        body=content,
    )
    assert second[0] == 200
    assert session_reply_matches(
        sender.key,
        sender=node_identity().public_key,
        request_signature=second[3][SIGNATURE_HEADER],
        status=200,
        header=second[1][REPLY_HEADER.lower()],
        signature=second[1][REPLY_SIGNATURE_HEADER.lower()],
        body=second[2],
    )
    assert ExchangeSession.objects.filter(session_id=sender.session_id, peer_key=alice.public_key).exists()


def test_django_answers_the_same_way_when_the_fast_path_steps_aside(api, alice):
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}])
    evaluation.start()
    body = sender.message(0)

    response = api.post(
        f"{PATH}?format=smpc", body, content_type="application/octet-stream", headers=sender.headers(body, 0)
    )
    evaluation.join(timeout=5)

    assert response.status_code == 200, response.content
    assert wire.unpack(response.content)[1]["round"] == 0
    assert response[REPLY_HEADER]


def test_a_replayed_first_message_is_refused_at_once_once_its_session_is_over(alice):
    """The attack: one captured /smpc/exchange replayed held a thread for the whole timeout (504) each time."""
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}])
    evaluation.start()
    body = sender.message(0)
    headers = sender.headers(body, 0)
    assert post(body, headers)[0] == 200
    evaluation.join(timeout=5)

    replays = [post(body, headers) for _ in range(3)]

    assert [status for status, _, _ in replays] == [409, 409, 409]
    assert "accepted once" in json.loads(replays[0][2])["error"]
    assert ExchangeSession.objects.filter(session_id=sender.session_id).count() == 1


def test_a_replayed_later_round_is_refused_at_once_and_never_waits_for_a_session(alice):
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}, {"y": torch.tensor([2])}])
    evaluation.start()
    assert send(sender)[0] == 200
    body = sender.message(1)
    headers = sender.headers(body, 1)
    assert post(body, headers)[0] == 200
    evaluation.join(timeout=5)

    status, _, content = post(body, headers)

    assert status == 409
    assert "No evaluation of session" in json.loads(content)["error"]


def test_a_replay_during_the_session_is_refused_and_the_session_goes_on(alice):
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}, {"y": torch.tensor([2])}])
    evaluation.start()
    first = sender.message(0)
    first_headers = sender.headers(first, 0)
    answer = post(first, first_headers)
    sender.learn(answer[2])

    replayed = post(first, first_headers)
    second = send(sender, 1)
    evaluation.join(timeout=5)

    assert answer[0] == 200
    assert replayed[0] == 409
    assert second[0] == 200
    assert wire.unpack(second[2])[1] == {"session": sender.session_id, "round": 1}
    assert evaluation.error is None
    assert len(evaluation.received) == 2


def test_a_later_round_not_signed_with_the_session_key_is_refused_and_the_session_goes_on(alice):
    """Not even the peer's own key signs a later round: only the key of this session does."""
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}, {"y": torch.tensor([2])}])
    evaluation.start()
    assert send(sender)[0] == 200
    body = sender.message(1)
    signed_by_node_key = alice.headers(
        body, purpose="exchange", model_id=MODEL, session_id=sender.session_id, round_number=1
    )
    other = party_zero(alice, sender.session_id)
    other.key = bytes(32)  # a session key that is not this session's

    refused = [post(body, signed_by_node_key), post(body, other.headers(body, 1))]
    accepted = send(sender, 1)
    evaluation.join(timeout=5)

    assert [status for status, _, _ in refused] == [409, 409]
    assert "not signed with this session's key" in json.loads(refused[0][2])["error"]
    assert accepted[0] == 200
    assert evaluation.error is None


def test_a_stray_round_from_the_peer_is_refused_without_ending_the_session(alice):
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}])
    evaluation.start()
    body = sender.message(3)
    # Round 0 must come first: a round-3 message finds the session waiting for round 0.
    early = post(
        body, alice.headers(body, purpose="exchange", model_id=MODEL, session_id=sender.session_id, round_number=3)
    )
    on_time = send(sender)
    evaluation.join(timeout=5)

    assert early[0] == 409
    assert "waits for round 0" in json.loads(early[2])["error"]
    assert on_time[0] == 200
    assert evaluation.error is None


def test_a_body_that_breaks_the_order_its_label_promised_stops_the_session_on_both_sides(alice):
    sender = party_zero(alice)
    evaluation = Evaluation(sender.session_id, alice.public_key, [{"y": torch.tensor([1])}])
    evaluation.start()

    # Signed as round 0, but the message inside says round 3: party 0 is broken, the session ends.
    body = sender.message(0, round=3)
    status, _, content = post(body, sender.headers(body, 0))
    evaluation.join(timeout=5)

    assert status == 409
    assert "expected round 0" in json.loads(content)["error"]
    assert isinstance(evaluation.error, BadGateway)


def test_only_party_0_of_the_model_here_may_start_a_session(peers):
    peers["carol"].trusted()  # trusted, but not party 0 of MODEL
    session = secrets.token_hex(16)

    trusted_bystander = send(party_zero(peers["carol"], session))
    stranger = send(party_zero(peers["crypto"], session))

    assert (trusted_bystander[0], stranger[0]) == (403, 403)
    assert not ExchangeSession.objects.exists()


def test_a_message_for_another_node_is_refused(alice, peers):
    sender = party_zero(alice)
    body = sender.message(0)
    headers = alice.headers(
        body, purpose="exchange", model_id=MODEL, session_id=sender.session_id, recipient=peers["bob"].public_key
    )

    status, _, content = post(body, headers)

    assert status == 401
    assert "signed for another node" in json.loads(content)["error"]
    assert not ExchangeSession.objects.exists()


def test_a_session_that_is_not_running_here_is_a_504_after_the_timeout(alice):
    status, _, content, _ = send(party_zero(alice))

    assert status == 504
    assert "No evaluation of session" in json.loads(content)["error"]


def test_a_session_id_runs_once_at_a_time_on_a_node(alice):
    session = secrets.token_hex(16)

    def mailbox():
        return SessionMailbox(session_id=session, model_id=MODEL, peer_key=alice.public_key, traffic=Traffic())

    first = mailbox()
    try:
        with pytest.raises(Exception, match="already running"):
            mailbox()
    finally:
        first.close()
    mailbox().close()  # free again once closed


def test_unsigned_exchanges_are_refused_before_any_session_is_touched(api, alice):
    body = party_zero(alice).message(0)

    unsigned = post(body, {})
    through_django = api.post(f"{PATH}?format=smpc", body, content_type="application/octet-stream")

    assert unsigned[0] == 401
    assert "unsigned" in json.loads(unsigned[2])["error"]
    assert through_django.status_code == 401
    assert through_django.json() == json.loads(unsigned[2])
    assert not ExchangeSession.objects.exists()


def test_an_exchange_needs_no_token_with_every_group_closed(api, alice, settings):
    """Nodes prove themselves with their signature: closing every group (GRIDNODE_AUTH_*) asks them no token."""
    for group in GROUPS:
        setattr(settings, f"GRIDNODE_AUTH_{group.upper()}", True)
    sender = party_zero(alice)
    body = sender.message(0)

    status, _, content, _ = send(sender)  # signed: it gets as far as the session, which does not run here
    unsigned_through_django = api.post(f"{PATH}?format=smpc", body, content_type="application/octet-stream")

    assert status == 504
    assert json.loads(content)["error"].startswith(f"No evaluation of session {sender.session_id} is running")
    assert unsigned_through_django.status_code == 401
    assert "unsigned" in unsigned_through_django.json()["error"]


def test_a_token_sent_with_an_exchange_is_checked_as_django_checks_it(api, alice):
    """Before: the fast path ignored an Authorization header that Django refuses when its token is wrong."""
    sender = party_zero(alice)
    body = sender.message(0)
    headers = {**sender.headers(body, 0), "Authorization": "Token wrong"}

    status, answer_headers, content = post(body, headers)
    through_django = api.post(f"{PATH}?format=smpc", body, content_type="application/octet-stream", headers=headers)

    assert (status, answer_headers["www-authenticate"]) == (401, "Token")
    assert json.loads(content) == through_django.json() == {"error": "Invalid token."}
    assert not ExchangeSession.objects.exists()


@pytest.mark.parametrize("length", [None, "ten"])
def test_an_exchange_without_a_plain_content_length_is_refused_by_django_from_its_headers(alice, length):
    sender = party_zero(alice)
    body = sender.message(0)

    unsigned = call_with_content_length(body, {}, length)
    signed = call_with_content_length(body, sender.headers(body, 0), length)

    assert (unsigned[0], json.loads(unsigned[2])["error"]) == (
        401,
        "This endpoint is for the nodes of an encrypted model: the request is unsigned.",
    )
    assert (signed[0], json.loads(signed[2])["error"]) == (
        400,
        "The request's Content-Length is not the length its sender signed.",
    )
    assert not ExchangeSession.objects.exists()


def call_with_content_length(body: bytes, headers: dict, length: str | None):
    """POST a message through the node with this Content-Length header (None: none at all)."""

    def with_length(environ, start_response):
        if length is None:
            del environ["CONTENT_LENGTH"]
        else:
            environ["CONTENT_LENGTH"] = length
        return application(environ, start_response)

    return call_wsgi(with_length, "POST", PATH, body, content_type="application/octet-stream", headers=headers)


def test_a_large_body_is_refused_before_a_byte_of_it_is_read(alice):
    """Before: /smpc/exchange read up to 512 MiB before checking the signature."""
    length = 100 * 1024**2
    session = secrets.token_hex(16)

    def signed(purpose: str, round_number: int) -> dict[str, str]:
        return alice.headers(
            b"", purpose=purpose, model_id=MODEL, session_id=session, round_number=round_number, length=length
        )

    unsigned = call_with_large_body(application, PATH, length=length, headers={})
    other_purpose = call_with_large_body(application, PATH, length=length, headers=signed("randomness", 1))
    replayed_round = call_with_large_body(application, PATH, length=length, headers=signed("exchange", 1))

    assert (unsigned[0], unsigned[2]) == (401, 0)
    assert (other_purpose[0], other_purpose[2]) == (401, 0)
    assert (replayed_round[0], replayed_round[2]) == (409, 0)  # no session waits for it: its body is never read


def test_the_node_answers_4xx_never_503_whoever_asks(alice):
    """Before: a node without GRIDNODE_SMPC_SECRET answered 503, raising its 5xx rate at a stranger's will."""
    status, _, content = post(party_zero(alice).message(0), {})

    assert status == 401
    assert "error" in json.loads(content)


@pytest.mark.parametrize(("role", "party"), [("crypto_provider", None), ("worker", 0)])
def test_a_node_that_is_not_party_1_of_the_model_never_waits_for_its_session(alice, upload_share, role, party):
    """A provider or party 0 of a model (its registration naming alice as party 0) refuses alice's exchange
    at once: no session of that model will ever run here as party 1."""
    upload_share("provided", role=role, party=party, allow_remote_inference=True)
    sender = PartyZero(alice, model_id="provided", session_id=secrets.token_hex(16))
    body = sender.message(0)

    status, _, content = post(body, sender.headers(body, 0))

    assert status == 403
    assert "not party 0 of 'provided'" in json.loads(content)["error"]
    assert not ExchangeSession.objects.exists()
