"""POST /smpc/exchange: party 0's message for a round reaches this node's evaluation of the session, and
the answer is party 1's message; through the WSGI fast path and through Django alike."""

import json
import secrets
import threading

import pytest
import torch

from gridnode.errors import BadGateway
from smpc_app.channels import SessionMailbox, Traffic
from smpc_app.nodeauth import signed_headers
from smpc_protocol import wire
from tests.wsgi import call_wsgi

pytestmark = pytest.mark.django_db

PATH = "/smpc/exchange"


@pytest.fixture(autouse=True)
def smpc(settings):
    settings.GRIDNODE_SMPC_SECRET = "e" * 40
    settings.GRIDNODE_SMPC_TIMEOUT = 1


@pytest.fixture
def node():
    from gridnode.wsgi import application

    def post(body: bytes, *, signed: bool = True, path: str = PATH):
        headers = signed_headers("POST", path, body) if signed else {}
        return call_wsgi(application, "POST", path, body, content_type="application/octet-stream", headers=headers)

    return post


def round_message(session: str, round_number: int = 0) -> bytes:
    return wire.pack({"x": torch.arange(4)}, {"session": session, "model_id": "m", "round": round_number})


class Evaluation(threading.Thread):
    """This node's side of a session: answers one round with `reply`, keeps what it received or raised."""

    def __init__(self, session: str, reply: dict):
        super().__init__(daemon=True)
        self.mailbox = SessionMailbox(session_id=session, traffic=Traffic())
        self.reply, self.received, self.error = reply, None, None

    def run(self):
        try:
            self.received = self.mailbox.exchange(self.reply)
        except Exception as error:
            self.error = error
        finally:
            self.mailbox.close()


@pytest.mark.parametrize("path", [PATH, PATH + "/"])
def test_it_hands_the_message_to_the_session_and_answers_its_reply(node, path):
    session = secrets.token_hex(16)
    evaluation = Evaluation(session, {"y": torch.tensor([7, 8])})
    evaluation.start()

    status, headers, content = node(round_message(session), path=path)
    evaluation.join(timeout=5)

    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    tensors, meta = wire.unpack(content)
    assert torch.equal(tensors["y"], torch.tensor([7, 8]))
    assert meta == {"session": session, "round": 0}
    assert torch.equal(evaluation.received["x"], torch.arange(4))


def test_a_message_out_of_order_stops_the_session_with_an_error_on_both_sides(node):
    session = secrets.token_hex(16)
    evaluation = Evaluation(session, {"y": torch.tensor([1])})
    evaluation.start()

    status, _, content = node(round_message(session, round_number=3))
    evaluation.join(timeout=5)

    assert status == 409
    assert "expected round 0" in json.loads(content)["error"]
    assert isinstance(evaluation.error, BadGateway)


def test_a_session_that_is_not_running_here_is_a_504_after_the_timeout(node):
    status, _, content = node(round_message(secrets.token_hex(16)))

    assert status == 504
    assert "No evaluation of session" in json.loads(content)["error"]


def test_a_session_id_runs_once_at_a_time_on_a_node():
    session = secrets.token_hex(16)
    first = SessionMailbox(session_id=session, traffic=Traffic())
    try:
        with pytest.raises(Exception, match="already running"):
            SessionMailbox(session_id=session, traffic=Traffic())
    finally:
        first.close()
    SessionMailbox(session_id=session, traffic=Traffic()).close()  # free again once closed


def test_unsigned_or_malformed_exchanges_are_refused_before_any_session_is_touched(node, api):
    session = secrets.token_hex(16)

    unsigned = node(round_message(session), signed=False)
    not_a_message = node(b"hello")
    no_session = node(wire.pack({}, {"round": 0}))
    through_django = api.post(PATH, round_message(session), content_type="application/octet-stream")

    assert unsigned[0] == 401
    assert "unsigned" in json.loads(unsigned[2])["error"]
    assert not_a_message[0] == 400
    assert no_session[0] == 400
    assert through_django.status_code == 401
    assert through_django.json() == json.loads(unsigned[2])


def test_the_exchange_answers_503_on_a_node_without_the_smpc_secret(node, settings):
    body = round_message(secrets.token_hex(16))
    headers = signed_headers("POST", PATH, body)
    settings.GRIDNODE_SMPC_SECRET = ""
    from gridnode.wsgi import application

    status, _, content = call_wsgi(application, "POST", PATH, body, "application/octet-stream", headers=headers)

    assert status == 503
    assert "GRIDNODE_SMPC_SECRET" in json.loads(content)["error"]
