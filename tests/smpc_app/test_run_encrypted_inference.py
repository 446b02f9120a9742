"""POST /encrypted-models/<id>/inference on one worker, for what the worker decides alone: bad input
shares, permissions, roles, and a crypto provider that cannot be reached. (The whole protocol across
three live nodes is tests/smpc_app/test_encrypted_inference.py.)"""

import secrets

import pytest
import torch

from smpc_app.models import RandomnessSession
from smpc_protocol import wire
from tests.smpc_app.helpers import PeerNode

pytestmark = pytest.mark.django_db

# Nothing listens on port 9 (discard) here: a connection is refused at once.
NOBODY = "http://127.0.0.1:9"
PEER = "http://127.0.0.1:10"


@pytest.fixture(autouse=True)
def smpc(settings):
    settings.GRIDNODE_SMPC_TIMEOUT = 2


@pytest.fixture
def trusted(tmp_path_factory):
    """Trust the nodes at these addresses (each with a key of its own)."""
    root = tmp_path_factory.mktemp("trusted")

    def trust(*urls: str) -> None:
        for index, url in enumerate(urls):
            PeerNode(root / str(index), url).trusted()

    return trust


@pytest.fixture
def worker(register, upload_share, trusted):
    """Party `party`'s share of `shared` on this node, with a crypto provider that is down; the other
    worker and the provider trusted."""

    def host(party: int = 0, **flags):
        workers = [PEER, "http://127.0.0.1:11"]
        register("shared", workers=workers, crypto_provider=[NOBODY])
        trusted(workers[1 - party], NOBODY)
        flags.setdefault("allow_remote_inference", True)
        upload_share("shared", role="worker", party=party, registered=True, **flags)

    return host


def evaluate(api, message: bytes, model_id: str = "shared"):
    return api.post(f"/encrypted-models/{model_id}/inference", message, content_type="application/octet-stream")


def input_share(batch: int = 1, features: int = 4, session: str | None = None, **meta) -> bytes:
    x = torch.zeros(batch, features, dtype=torch.int64)
    return wire.pack({"x": x}, {"session": session or secrets.token_hex(16), **meta})


@pytest.mark.parametrize("party", [0, 1])
def test_an_unreachable_crypto_provider_is_a_502_naming_it(api, worker, party):
    worker(party)
    session = secrets.token_hex(16)

    response = evaluate(api, input_share(session=session))

    assert response.status_code == 502
    assert response.json()["error"] == (
        f"The crypto provider at {NOBODY} is unreachable: the randomness of session {session} "
        "could not be sent or answered."
    )
    # The session is over on this node: the same id could be tried again rather than "already running".
    assert evaluate(api, input_share(session=session)).status_code == 502


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        (b"", "not an SMPC message"),
        (b"GNS1\x00\x00\x00\x02{}", "not an SMPC message"),
        (wire.pack({"x": torch.zeros(1, 4, dtype=torch.int64)}, {"session": "nope"}), "'session'"),
        (wire.pack({"x": torch.zeros(1, 4, dtype=torch.int64)}, {}), "'session'"),
        (wire.pack({}, {"session": "a" * 32}), "exactly one tensor"),
        (
            wire.pack(
                {"x": torch.zeros(1, 4, dtype=torch.int64), "y": torch.zeros(1, dtype=torch.int64)},
                {"session": "a" * 32},
            ),
            "one",
        ),
        (input_share(features=5), "shape"),
        (wire.pack({"x": torch.zeros(4, dtype=torch.int64)}, {"session": "a" * 32}), "shape"),
        (input_share(batch=1025), "'batch'"),
    ],
)
def test_a_bad_input_share_is_a_400_and_the_provider_is_not_asked(api, worker, message, needle):
    worker(0)

    response = evaluate(api, message)

    assert response.status_code == 400
    assert needle in response.json()["error"]


def test_a_share_sent_to_the_wrong_party_is_a_409(api, worker):
    worker(0)

    response = evaluate(api, input_share(party=1))

    assert response.status_code == 409
    assert "party 0's share" in response.json()["error"]


def test_the_owner_can_keep_the_share_from_being_run(api, worker):
    worker(0, allow_remote_inference=False)

    response = evaluate(api, input_share())

    assert response.status_code == 403


def test_a_crypto_provider_does_not_evaluate(api, register, upload_share):
    upload_share("shared", role="crypto_provider", party=None, allow_remote_inference=True)

    response = evaluate(api, input_share())

    assert response.status_code == 409
    assert not RandomnessSession.objects.exists()


def test_an_unknown_model_is_a_404(api):
    assert evaluate(api, input_share(), model_id="nothing-here").status_code == 404


def test_a_registration_with_three_workers_is_a_409(api, register, upload_share):
    register("shared", workers=[PEER, "http://127.0.0.1:11", "http://127.0.0.1:12"], crypto_provider=[NOBODY])
    upload_share("shared", role="worker", party=0, registered=True, allow_remote_inference=True)

    response = evaluate(api, input_share())

    assert response.status_code == 409
    assert "runs on two" in response.json()["error"]


def test_a_worker_running_all_the_evaluations_it_may_answers_503_at_once(api, worker, settings):
    from smpc_app.runtime import _session_slot

    worker(0)
    settings.GRIDNODE_SMPC_MAX_SESSIONS = 1

    with _session_slot():
        busy = evaluate(api, input_share())
    free_again = evaluate(api, input_share())

    assert busy.status_code == 503
    assert "try again" in busy.json()["error"]
    assert free_again.status_code == 502  # past the slot: on to the (unreachable) crypto provider
