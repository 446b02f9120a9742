"""Round messages through Redis (GRIDNODE_BROKER_URL, smpc_app/broker.py): every exchange test of
test_exchange_round.py again with the broker between `deliver` and the session's evaluation, then what
only the broker has: keys that expire, a bounded inbox, a message written into Redis by someone else
refused, a large body sent once accepted, an unreachable Redis failing a round at once.

Needs Redis (GRIDNODE_TEST_REDIS_URL, else redis://127.0.0.1:6379/0); skipped without it, except in CI.
"""

import json
import os
import secrets
import struct

import pytest
import redis
import torch

from gridnode.errors import BadGateway, GatewayTimeout
from smpc_app import broker
from smpc_app.channels import Deadline, SessionMailbox, Traffic
from smpc_app.identity import node_identity
from smpc_protocol import wire
from tests.smpc_app.test_exchange_round import (  # noqa: F401  (collected here again, with the broker on)
    MODEL,
    Evaluation,
    alice,
    party_1,
    party_zero,
    post,
    send,
    test_a_body_that_breaks_the_order_its_label_promised_stops_the_session_on_both_sides,
    test_a_large_body_is_refused_before_a_byte_of_it_is_read,
    test_a_later_round_not_signed_with_the_session_key_is_refused_and_the_session_goes_on,
    test_a_message_for_another_node_is_refused,
    test_a_replay_during_the_session_is_refused_and_the_session_goes_on,
    test_a_replayed_first_message_is_refused_at_once_once_its_session_is_over,
    test_a_replayed_later_round_is_refused_at_once_and_never_waits_for_a_session,
    test_a_session_id_runs_once_at_a_time_on_a_node,
    test_a_session_that_is_not_running_here_is_a_504_after_the_timeout,
    test_a_stray_round_from_the_peer_is_refused_without_ending_the_session,
    test_django_answers_the_same_way_when_the_fast_path_steps_aside,
    test_it_hands_the_message_to_the_session_and_answers_its_reply_signed,
    test_only_party_0_of_the_model_here_may_start_a_session,
)

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("GRIDNODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        missing = f"no Redis at {REDIS_URL} (GRIDNODE_TEST_REDIS_URL)"
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI has one: never a silent skip there
        pytest.skip(missing)
    return client


@pytest.fixture(autouse=True)
def through_the_broker(settings, redis_client):
    settings.GRIDNODE_BROKER_URL = REDIS_URL


def session_keys(client: redis.Redis, session: str) -> dict[str, int]:
    """Every key of `session` on this node in Redis, with its time to live (ms; -1: none)."""
    prefix = broker.SessionKeys.of(node_identity().public_key, session).prefix
    return {key.decode(): client.pttl(key) for key in client.scan_iter(match=prefix + "*")}


def inject(client: redis.Redis, session: str, label: dict, body: bytes = b"") -> str:
    """Write a message into the session's inbox as someone with access to Redis would; its reply id."""
    reply = secrets.token_hex(16)
    meta = json.dumps({**label, "reply": reply}).encode()
    keys = broker.SessionKeys.of(node_identity().public_key, session)
    client.rpush(keys.inbox, struct.pack(">I", len(meta)) + meta + body)
    return reply


def answer_to(client: redis.Redis, session: str, reply: str) -> bytes:
    keys = broker.SessionKeys.of(node_identity().public_key, session)
    popped = client.blpop([keys.reply(reply)], timeout=5)
    assert popped is not None
    return popped[1]


def test_every_key_of_a_session_expires_and_none_outlives_it_unbounded(peers, redis_client):
    peer = peers["alice"]
    sender = party_zero(peer)
    evaluation = Evaluation(sender.session_id, peer.public_key, [{"y": torch.tensor([1])}, {"y": torch.tensor([2])}])
    evaluation.start()
    assert send(sender)[0] == 200
    during = session_keys(redis_client, sender.session_id)
    assert send(sender, 1)[0] == 200
    evaluation.join(timeout=5)

    assert any(key.endswith(":live") for key in during)
    assert all(ttl > 0 for ttl in during.values()), during
    after = session_keys(redis_client, sender.session_id)
    assert not any(key.endswith((":live", ":in")) for key in after)  # removed as the session ended
    assert all(ttl > 0 for ttl in after.values()), after  # answers already read: gone, or expiring


def test_a_message_written_into_redis_by_someone_else_is_refused_and_the_session_goes_on(peers, redis_client):
    """Whoever can write to the broker cannot slip a first round into a session: its signature is checked
    again by the evaluation, and a body that is not the one signed is refused too."""
    peer = peers["alice"]
    sender = party_zero(peer)
    evaluation = Evaluation(sender.session_id, peer.public_key, [{"y": torch.tensor([1])}])
    evaluation.start()
    body = sender.message(0)
    headers = sender.headers(body, 0)
    header, signature = headers["X-Gridnode-Message"], headers["X-Gridnode-Signature"]
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    other_body = sender.message(0, tensors={"x": torch.arange(5)})

    bad_signature = inject(
        redis_client, sender.session_id, {"header": header, "signature": forged_signature, "inline": True}, body
    )
    bad_body = inject(
        redis_client, sender.session_id, {"header": header, "signature": signature, "inline": True}, other_body
    )
    refusals = [answer_to(redis_client, sender.session_id, reply) for reply in (bad_signature, bad_body)]
    accepted = post(body, headers)
    evaluation.join(timeout=5)

    assert refusals == [
        broker.REFUSED + b"the message's node signature does not match",
        broker.REFUSED + b"the message's body is not the one its sender signed",
    ]
    assert accepted[0] == 200
    assert evaluation.error is None
    assert torch.equal(evaluation.received[0]["x"], torch.arange(4))


def test_a_message_for_another_session_never_reaches_this_one(peers, redis_client):
    peer = peers["alice"]
    mine, other = party_zero(peer), party_zero(peer)
    evaluation = Evaluation(mine.session_id, peer.public_key, [{"y": torch.tensor([1])}])
    evaluation.start()
    body = other.message(0)
    headers = other.headers(body, 0)
    label = {"header": headers["X-Gridnode-Message"], "signature": headers["X-Gridnode-Signature"], "inline": True}

    # Even written straight into this session's inbox, a message labelled for another session is refused.
    refusal = answer_to(redis_client, mine.session_id, inject(redis_client, mine.session_id, label, body))
    assert send(mine)[0] == 200
    evaluation.join(timeout=5)

    assert refusal == broker.REFUSED + b"the message is for another model or session than this one"
    assert evaluation.error is None


def test_a_message_still_queued_when_the_session_ends_is_answered_at_once(peers, redis_client):
    peer = peers["alice"]
    sender = party_zero(peer)
    mailbox = SessionMailbox(session_id=sender.session_id, model_id=MODEL, peer_key=peer.public_key, traffic=Traffic())
    body = sender.message(0)
    headers = sender.headers(body, 0)
    label = {"header": headers["X-Gridnode-Message"], "signature": headers["X-Gridnode-Signature"], "inline": True}
    queued = inject(redis_client, sender.session_id, label, body)

    mailbox.close()

    assert answer_to(redis_client, sender.session_id, queued) == broker.NO_SESSION
    assert session_keys(redis_client, sender.session_id).keys() == set()


def test_a_full_inbox_refuses_more_messages_at_once(peers, redis_client):
    peer = peers["alice"]
    sender = party_zero(peer)
    mailbox = SessionMailbox(session_id=sender.session_id, model_id=MODEL, peer_key=peer.public_key, traffic=Traffic())
    try:
        keys = broker.SessionKeys.of(node_identity().public_key, sender.session_id)
        for _ in range(broker.MAX_QUEUED):
            redis_client.rpush(keys.inbox, b"queued, never read")
        status, _, content, _ = send(sender)
    finally:
        mailbox.close()

    assert status == 409
    assert "too many messages wait" in json.loads(content)["error"]


def test_a_large_body_is_sent_only_once_its_label_is_accepted(peers):
    peer = peers["alice"]
    sender = party_zero(peer)
    evaluation = Evaluation(sender.session_id, peer.public_key, [{"y": torch.tensor([3])}])
    evaluation.start()
    large = torch.arange(100_000)  # 800 KB: past INLINE_BODY_BYTES

    status, _, content, _ = send(sender, tensors={"x": large})
    evaluation.join(timeout=5)

    assert status == 200
    assert torch.equal(wire.unpack(content)[0]["y"], torch.tensor([3]))
    assert torch.equal(evaluation.received[0]["x"], large)


def test_the_evaluation_waits_no_longer_than_its_deadline(peers):
    peer = peers["alice"]
    deadline = Deadline(0.2)
    mailbox = SessionMailbox(
        session_id=secrets.token_hex(16),
        model_id=MODEL,
        peer_key=peer.public_key,
        traffic=Traffic(),
        deadline=deadline,
    )
    try:
        with pytest.raises(GatewayTimeout, match="GRIDNODE_INFERENCE_TIMEOUT"):
            mailbox.exchange({"y": torch.tensor([1])})
    finally:
        mailbox.close()


def test_an_unreachable_broker_fails_the_round_with_a_502(peers, settings):
    peer = peers["alice"]
    settings.GRIDNODE_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    with pytest.raises(BadGateway, match="broker"):
        SessionMailbox(session_id=secrets.token_hex(16), model_id=MODEL, peer_key=peer.public_key, traffic=Traffic())
    status, _, content, _ = send(party_zero(peer))

    assert status == 502
    assert "broker" in json.loads(content)["error"]
