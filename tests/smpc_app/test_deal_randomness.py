"""POST /encrypted-models/<id>/randomness: the crypto provider deals party p's half of a session's
randomness once, only to the trusted node its registration names as party p, judged by the request's
signed headers before its body is read; its answer is signed for the request."""

import secrets
import time

import pytest
import torch

from gridnode.wsgi import application
from smpc_app import registrations
from smpc_app.identity import node_identity
from smpc_app.models import RandomnessSession
from smpc_app.nodeauth import (
    MESSAGE_HEADER,
    REPLY_HEADER,
    REPLY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    reply_is_signed,
)
from smpc_app.runtime import PARTY_ZERO_KEY_META
from smpc_protocol import randomness, wire
from smpc_protocol.maps import product
from tests.smpc_app.helpers import ALICE, BOB, CRYPTO, call_with_large_body

pytestmark = pytest.mark.django_db

PATH = "/encrypted-models/shared/randomness"


@pytest.fixture
def provider(upload_share, shared_model, peers):
    """A model this node is the crypto provider of, inference allowed; its two workers trusted."""
    upload_share("shared", role="crypto_provider", party=None, allow_remote_inference=True)
    peers["alice"].trusted()
    peers["bob"].trusted()
    return shared_model


def message(session: str, party: int = 0, batch: int = 2, spec_digest: str | None = None, shared_model=None) -> bytes:
    digest = spec_digest if spec_digest is not None else shared_model.spec.digest()
    return wire.pack({}, {"session": session, "party": party, "batch": batch, "spec_digest": digest})


def half_of(response, party: int, shared_model, batch: int = 2):
    """The half a worker holds after the provider's answer: party 0 gets a key and draws its half from it."""
    bundle, meta = wire.unpack(response.content)
    if party == 0:
        assert bundle == {}
        key = bytes.fromhex(meta[PARTY_ZERO_KEY_META])
        bundle = randomness.party_zero_bundle(spec=shared_model.spec, batch=batch, key=key)
    return bundle, meta


def deal(api, body: bytes, *, by, session: str, party: int = 0, model_id: str = "shared", headers=None, **signed):
    """POST a randomness request signed by the peer `by` (or with the given headers)."""
    if headers is None:
        headers = by.headers(body, purpose="randomness", model_id=model_id, session_id=session, party=party, **signed)
    return api.post(
        f"/encrypted-models/{model_id}/randomness", body, content_type="application/octet-stream", headers=headers
    )


def test_it_deals_each_registered_worker_its_own_half_once_and_signs_the_answers(api, provider, peers):
    session = secrets.token_hex(16)

    halves = []
    for party, worker in ((0, peers["alice"]), (1, peers["bob"])):
        body = message(session, party, shared_model=provider)
        headers = worker.headers(body, purpose="randomness", model_id="shared", session_id=session, party=party)
        response = deal(api, body, by=worker, session=session, headers=headers)
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/octet-stream"
        assert reply_is_signed(
            sender=node_identity().public_key,
            request_signature=headers[SIGNATURE_HEADER],
            status=200,
            header=response[REPLY_HEADER],
            signature=response[REPLY_SIGNATURE_HEADER],
            body=response.content,
        )
        halves.append(half_of(response, party, provider))

    (first, first_meta), (second, second_meta) = halves
    assert first_meta["bundle_id"] == second_meta["bundle_id"]
    assert set(first) == set(randomness.bundle_shapes(provider.spec, 2))
    # The halves fit together: Beaver pairs against the provider's mask, AND triples.
    a = first["0.A"] + second["0.A"]
    mask = provider.provider_part["0.weight_mask"]
    assert torch.equal(first["0.C"] + second["0.C"], product(provider.spec.layers[0], a, mask, (3,)))
    u, v, w = ((first[f"1.and0g.{p}"] ^ second[f"1.and0g.{p}"]) for p in "uvw")
    assert torch.equal(w, u & v)
    record = RandomnessSession.objects.get(session_id=session)
    assert (record.model_id, record.batch, record.served_party_0, record.served_party_1) == ("shared", 2, True, True)
    assert (record.party_0_node, record.party_1_node) == (peers["alice"].public_key, peers["bob"].public_key)


def test_one_worker_cannot_get_the_other_partys_half_of_a_session_it_invents(api, provider, peers):
    """The attack: a worker asking for both halves of one session (A and C = A*B give the mask B away)."""
    session = secrets.token_hex(16)
    alice = peers["alice"]
    assert deal(api, message(session, 0, shared_model=provider), by=alice, session=session).status_code == 200

    other_half = deal(api, message(session, 1, shared_model=provider), by=alice, session=session, party=1)

    assert other_half.status_code == 403
    assert "not party 1" in other_half.json()["error"]
    assert RandomnessSession.objects.filter(session_id=session, served_party_1=False).exists()


def test_no_node_gets_both_halves_even_when_the_registration_is_changed_between_its_requests(api, provider, peers):
    session = secrets.token_hex(16)
    alice = peers["alice"]
    assert deal(api, message(session, 0, shared_model=provider), by=alice, session=session).status_code == 200
    # A writer re-registers the model with alice as party 1 (bob as party 0).
    registrations.encrypted_model_update(
        registration=registrations.encrypted_model_get(model_id="shared"),
        description="",
        workers=[BOB, ALICE],
        crypto_provider=[CRYPTO],
    )

    second = deal(api, message(session, 1, shared_model=provider), by=alice, session=session, party=1)

    assert second.status_code == 409
    assert "same node" in second.json()["error"]
    record = RandomnessSession.objects.get(session_id=session)
    assert (record.served_party_1, record.party_1_node) == (False, "")


def test_a_request_captured_on_its_way_to_another_node_is_refused_here(api, provider, peers):
    """The attack: a listener registered as some model's provider receives a real worker's signed request
    and replays it byte for byte to the real provider."""
    session = secrets.token_hex(16)
    listener = peers["carol"]
    body = message(session, 0, shared_model=provider)
    captured = peers["alice"].headers(
        body, purpose="randomness", model_id="shared", session_id=session, recipient=listener.public_key
    )

    replayed = deal(api, body, by=None, session=session, headers=captured)

    assert replayed.status_code == 401
    assert "signed for another node" in replayed.json()["error"]
    assert not RandomnessSession.objects.exists()


def test_a_replayed_request_is_refused_and_deals_nothing_more(api, provider, peers):
    session = secrets.token_hex(16)
    body = message(session, 0, shared_model=provider)
    headers = peers["alice"].headers(body, purpose="randomness", model_id="shared", session_id=session)
    assert deal(api, body, by=None, session=session, headers=headers).status_code == 200

    again = deal(api, body, by=None, session=session, headers=headers)

    assert again.status_code == 409
    assert "already dealt" in again.json()["error"]
    assert RandomnessSession.objects.filter(session_id=session, served_party_1=False).exists()


def test_an_untrusted_node_and_a_trusted_node_in_no_such_role_get_403s(api, provider, peers):
    session = secrets.token_hex(16)
    peers["carol"].trusted()  # trusted, but not a worker of this model

    stranger = deal(api, message(session, 0, shared_model=provider), by=peers["crypto"], session=session)
    bystander = deal(api, message(session, 0, shared_model=provider), by=peers["carol"], session=session)

    assert (stranger.status_code, bystander.status_code) == (403, 403)
    assert not RandomnessSession.objects.exists()


def test_a_leaked_worker_key_acts_as_that_worker_only(api, provider, peers):
    """Whoever holds bob's key can ask for bob's half, never alice's (nor sign for any other node)."""
    session = secrets.token_hex(16)

    as_alice = deal(api, message(session, 0, shared_model=provider), by=peers["bob"], session=session, party=0)

    assert as_alice.status_code == 403
    assert not RandomnessSession.objects.exists()


def test_a_session_is_for_one_model_and_batch(api, provider, peers):
    session = secrets.token_hex(16)
    assert (
        deal(api, message(session, 0, batch=2, shared_model=provider), by=peers["alice"], session=session).status_code
        == 200
    )

    other_batch = deal(
        api, message(session, 1, batch=3, shared_model=provider), by=peers["bob"], session=session, party=1
    )

    assert other_batch.status_code == 409
    assert "another model or batch" in other_batch.json()["error"]


def test_fresh_sessions_get_different_randomness(api, provider, peers):
    answers = []
    for _ in range(2):
        session = secrets.token_hex(16)
        response = deal(api, message(session, 0, shared_model=provider), by=peers["alice"], session=session)
        answers.append(half_of(response, 0, provider)[0])

    assert not torch.equal(answers[0]["0.A"], answers[1]["0.A"])


def test_it_refuses_a_worker_whose_model_differs(api, provider, peers):
    session = secrets.token_hex(16)
    body = message(session, 0, spec_digest="0" * 64, shared_model=provider)

    response = deal(api, body, by=peers["alice"], session=session)

    assert response.status_code == 409
    assert not RandomnessSession.objects.exists()


@pytest.mark.parametrize(
    ("meta", "needle"),
    [
        ({"session": "abc", "party": 0, "batch": 1}, "'session'"),
        ({"session": "b" * 32, "party": 0, "batch": 1}, "signature names"),
        ({"session": "a" * 32, "party": 1, "batch": 1}, "signature names"),
        ({"session": "a" * 32, "party": True, "batch": 1}, "signature names"),
        ({"session": "a" * 32, "party": 0, "batch": 0}, "'batch'"),
        ({"session": "a" * 32, "party": 0, "batch": 1025}, "'batch'"),
        ({"session": "a" * 32, "party": 0, "batch": "1"}, "'batch'"),
    ],
)
def test_bad_requests_are_400s_and_nothing_is_recorded(api, provider, peers, meta, needle):
    response = deal(api, wire.pack({}, meta), by=peers["alice"], session="a" * 32)

    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert not RandomnessSession.objects.exists()


def test_a_body_that_is_not_a_message_is_a_400(api, provider, peers):
    response = deal(api, b"hello", by=peers["alice"], session="a" * 32)

    assert response.status_code == 400
    assert "not an SMPC message" in response.json()["error"]


def test_unsigned_wrongly_signed_stale_and_misaddressed_requests_are_401s(api, provider, peers):
    session = secrets.token_hex(16)
    body = message(session, shared_model=provider)
    alice = peers["alice"]
    good = alice.headers(body, purpose="randomness", model_id="shared", session_id=session)
    forged = peers["crypto"].headers(body, purpose="randomness", model_id="shared", session_id=session)

    for headers in [
        {},
        {**good, SIGNATURE_HEADER: forged[SIGNATURE_HEADER]},
        {**good, MESSAGE_HEADER: good[MESSAGE_HEADER].replace(" 0 0 ", " 1 0 ")},
        alice.headers(
            body, purpose="randomness", model_id="shared", session_id=session, timestamp=int(time.time()) - 3600
        ),
        alice.headers(body, purpose="randomness", model_id="other", session_id=session),
        alice.headers(body, purpose="exchange", model_id="shared", session_id=session),
    ]:
        response = deal(api, body, by=None, session=session, headers=headers)
        assert response.status_code == 401, headers
        assert "error" in response.json()
    assert not RandomnessSession.objects.exists()


def test_a_body_other_than_the_one_signed_is_a_400(api, provider, peers):
    session = secrets.token_hex(16)
    body = message(session, shared_model=provider)
    headers = peers["alice"].headers(body, purpose="randomness", model_id="shared", session_id=session)
    tampered = body[:-1] + bytes([body[-1] ^ 1])

    response = deal(api, tampered, by=None, session=session, headers=headers)

    assert response.status_code == 400
    assert "not the one its sender signed" in response.json()["error"]
    assert not RandomnessSession.objects.exists()


def test_a_large_body_is_refused_before_a_byte_of_it_is_read(provider, peers):
    """Before: /randomness read up to 512 MiB before checking the signature."""
    length = 100 * 1024**2
    session = secrets.token_hex(16)
    signed = peers["alice"].headers(b"", purpose="randomness", model_id="shared", session_id=session, length=length)

    unsigned = call_with_large_body(application, PATH, length=length, headers={})
    too_large = call_with_large_body(application, PATH, length=length, headers=signed)

    assert (unsigned[0], unsigned[2]) == (401, 0)
    assert (too_large[0], too_large[2]) == (413, 0)
    assert not RandomnessSession.objects.exists()


def test_a_node_that_is_asked_without_a_signature_answers_401_never_503(api, provider):
    """Before: a node without GRIDNODE_SMPC_SECRET answered its SMPC endpoints with 503."""
    response = api.post(PATH, b"hello", content_type="application/octet-stream")

    assert response.status_code == 401
    assert "unsigned" in response.json()["error"]


def test_the_owner_can_stop_the_provider_dealing(api, upload_share, shared_model, peers):
    upload_share("shared", role="crypto_provider", party=None, allow_remote_inference=False)
    peers["alice"].trusted()
    session = secrets.token_hex(16)

    response = deal(api, message(session, shared_model=shared_model), by=peers["alice"], session=session)

    assert response.status_code == 403
    assert not RandomnessSession.objects.exists()


def test_a_worker_node_deals_nothing(api, upload_share, shared_model, peers):
    upload_share("shared", role="worker", party=1, allow_remote_inference=True)
    peers["alice"].trusted()
    session = secrets.token_hex(16)

    response = deal(api, message(session, shared_model=shared_model), by=peers["alice"], session=session)

    assert response.status_code == 409


def test_an_unknown_model_is_a_403_for_the_signer(api, provider, peers):
    session = secrets.token_hex(16)
    body = message(session, shared_model=provider)

    response = deal(api, body, by=peers["alice"], session=session, model_id="nope")

    assert response.status_code == 403


def test_a_signed_call_needs_no_user_token_even_when_every_group_is_closed(api, provider, peers, settings):
    for group in ("read", "write", "inference", "download", "metrics"):
        setattr(settings, f"GRIDNODE_AUTH_{group.upper()}", True)
    session = secrets.token_hex(16)

    response = deal(api, message(session, shared_model=provider), by=peers["alice"], session=session)

    assert response.status_code == 200
