"""POST /encrypted-models/<id>/randomness: the crypto provider deals each worker its half of a session's
randomness, once, and only to callers holding the nodes' shared secret."""

import secrets
import time

import pytest
import torch

from smpc_app.models import RandomnessSession
from smpc_app.nodeauth import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from smpc_protocol import randomness, wire
from smpc_protocol.maps import product

pytestmark = pytest.mark.django_db

SECRET = "s" * 40


@pytest.fixture(autouse=True)
def smpc_secret(settings):
    settings.GRIDNODE_SMPC_SECRET = SECRET


@pytest.fixture
def provider(upload_share, shared_model):
    """A model this node is the crypto provider of, inference allowed."""
    upload_share("shared", role="crypto_provider", party=None, allow_remote_inference=True)
    return shared_model


def message(session: str, party: int = 0, batch: int = 2, spec_digest: str | None = None, shared_model=None) -> bytes:
    digest = spec_digest if spec_digest is not None else shared_model.spec.digest()
    return wire.pack({}, {"session": session, "party": party, "batch": batch, "spec_digest": digest})


def deal(api, body: bytes, path: str = "/encrypted-models/shared/randomness", headers: dict | None = None):
    if headers is None:
        headers = signed_headers("POST", path, body)
    return api.post(path, body, content_type="application/octet-stream", headers=headers)


def test_it_deals_both_halves_of_the_same_randomness_once_each(api, provider):
    session = secrets.token_hex(16)

    halves = []
    for party in (0, 1):
        response = deal(api, message(session, party, shared_model=provider))
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/octet-stream"
        halves.append(wire.unpack(response.content))

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


def test_a_party_is_dealt_its_half_only_once(api, provider):
    session = secrets.token_hex(16)
    assert deal(api, message(session, 0, shared_model=provider)).status_code == 200

    again = deal(api, message(session, 0, shared_model=provider))

    assert again.status_code == 409
    assert "already dealt" in again.json()["error"]
    assert RandomnessSession.objects.filter(session_id=session, served_party_1=False).exists()


def test_a_session_is_for_one_model_and_batch(api, provider):
    session = secrets.token_hex(16)
    assert deal(api, message(session, 0, batch=2, shared_model=provider)).status_code == 200

    other_batch = deal(api, message(session, 1, batch=3, shared_model=provider))

    assert other_batch.status_code == 409
    assert "another model or batch" in other_batch.json()["error"]


def test_fresh_sessions_get_different_randomness(api, provider):
    first, second = (
        wire.unpack(deal(api, message(secrets.token_hex(16), 0, shared_model=provider)).content)[0] for _ in range(2)
    )

    assert not torch.equal(first["0.A"], second["0.A"])


def test_it_refuses_a_worker_whose_model_differs(api, provider):
    response = deal(api, message(secrets.token_hex(16), 0, spec_digest="0" * 64, shared_model=provider))

    assert response.status_code == 409
    assert not RandomnessSession.objects.exists()


@pytest.mark.parametrize(
    ("meta", "needle"),
    [
        ({"session": "abc", "party": 0, "batch": 1}, "'session'"),
        ({"session": "A" * 32, "party": 0, "batch": 1}, "'session'"),
        ({"session": "a" * 32, "party": 2, "batch": 1}, "'party'"),
        ({"session": "a" * 32, "party": True, "batch": 1}, "'party'"),
        ({"session": "a" * 32, "party": 0, "batch": 0}, "'batch'"),
        ({"session": "a" * 32, "party": 0, "batch": 1025}, "'batch'"),
        ({"session": "a" * 32, "party": 0, "batch": "1"}, "'batch'"),
    ],
)
def test_bad_requests_are_400s_and_nothing_is_recorded(api, provider, meta, needle):
    response = deal(api, wire.pack({}, meta))

    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert not RandomnessSession.objects.exists()


def test_a_body_that_is_not_a_message_is_a_400(api, provider):
    response = deal(api, b"hello")

    assert response.status_code == 400
    assert "not an SMPC message" in response.json()["error"]


def test_unsigned_wrongly_signed_and_stale_requests_are_401s(api, provider):
    body = message(secrets.token_hex(16), shared_model=provider)
    path = "/encrypted-models/shared/randomness"
    stale = str(int(time.time()) - 3600)
    good = signed_headers("POST", path, body)

    for headers in [
        {},
        {**good, SIGNATURE_HEADER: "0" * 64},
        {**good, TIMESTAMP_HEADER: stale},
        signed_headers("POST", "/encrypted-models/other/randomness", body),
        signed_headers("POST", path, body + b"x"),
    ]:
        response = deal(api, body, headers=headers)
        assert response.status_code == 401, headers
        assert "error" in response.json()
    assert not RandomnessSession.objects.exists()


def test_a_node_without_the_smpc_secret_answers_503(api, provider, settings):
    body = message(secrets.token_hex(16), shared_model=provider)
    headers = signed_headers("POST", "/encrypted-models/shared/randomness", body)
    settings.GRIDNODE_SMPC_SECRET = ""

    response = deal(api, body, headers=headers)

    assert response.status_code == 503
    assert "GRIDNODE_SMPC_SECRET" in response.json()["error"]


def test_the_owner_can_stop_the_provider_dealing(api, upload_share, shared_model):
    upload_share("shared", role="crypto_provider", party=None, allow_remote_inference=False)

    response = deal(api, message(secrets.token_hex(16), shared_model=shared_model))

    assert response.status_code == 403
    assert not RandomnessSession.objects.exists()


def test_a_worker_node_deals_nothing(api, upload_share, shared_model):
    upload_share("shared", role="worker", party=0, allow_remote_inference=True)

    response = deal(api, message(secrets.token_hex(16), shared_model=shared_model))

    assert response.status_code == 409


def test_an_unknown_model_is_a_404(api, provider):
    body = message(secrets.token_hex(16), shared_model=provider)

    response = deal(api, body, path="/encrypted-models/nope/randomness")

    assert response.status_code == 404


def test_a_signed_call_needs_no_user_token_even_when_every_group_is_closed(api, provider, settings):
    for group in ("read", "write", "inference", "download", "metrics"):
        setattr(settings, f"GRIDNODE_AUTH_{group.upper()}", True)

    response = deal(api, message(secrets.token_hex(16), shared_model=provider))

    assert response.status_code == 200
