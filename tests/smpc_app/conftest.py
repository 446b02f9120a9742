"""Fixtures for the encrypted-model tests, and helpers for this node's shares of them."""

import io
import json

import pytest
import torch

from smpc_app.shares import part_cache
from smpc_protocol.hosting import SharedModel, split_model
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, PeerNode


@pytest.fixture(autouse=True)
def fresh_trust_list():
    """Each test reads the trusted nodes from its own database, never a copy from an earlier test."""
    from smpc_app.trust import trust_list

    trust_list.clear()
    yield
    trust_list.clear()


@pytest.fixture(autouse=True)
def node_folder(settings, data_dir):
    """This node's data folder, where its key pair is made on first use, is the test's own."""
    settings.DATA_DIR = data_dir
    return data_dir


@pytest.fixture
def peers(tmp_path_factory) -> dict[str, PeerNode]:
    """The other nodes of the tests' registrations, each with its own key (not trusted until a test says so)."""
    root = tmp_path_factory.mktemp("peers")
    return {
        name: PeerNode(root / name, url)
        for name, url in [("alice", ALICE), ("bob", BOB), ("carol", CAROL), ("crypto", CRYPTO)]
    }


@pytest.fixture
def register(api):
    """Register an encrypted model over HTTP (two workers and a provider unless told); asserts a 201."""

    def post(model_id: str, workers=(ALICE, BOB), crypto_provider=(CRYPTO,), **extra) -> dict:
        body = {"model_id": model_id, "workers": list(workers), "crypto_provider": list(crypto_provider), **extra}
        response = api.post("/encrypted-models", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return post


# Shares: this node's part of a secret-shared model, built from a small model in the test.


class WritesCanary:
    """Unpickling this creates a file: proof that a payload's code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def torch_saved(value) -> bytes:
    """`torch.save` bytes of any value."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def stored_share_files(data_dir) -> list[str]:
    """The files under shares/ in storage."""
    root = data_dir / "files" / "shares"
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def staged_files(data_dir) -> list[str]:
    """Whatever is left in the upload staging folder."""
    return sorted(path.name for path in (data_dir / "tmp").iterdir())


@pytest.fixture(autouse=True)
def empty_part_cache():
    """Each test starts and ends with no loaded share in this process."""
    part_cache.clear()
    yield
    part_cache.clear()


@pytest.fixture(scope="session")
def shared_model() -> SharedModel:
    """A model split as its owner would split it: a spec, two workers' parts and the provider's part."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    return split_model(module, (4,))


@pytest.fixture
def part_bytes(shared_model):
    """`torch.save` bytes of a part: part_bytes("worker", 0), part_bytes("crypto_provider")."""

    def saved(role: str, party: int | None = None) -> bytes:
        part = shared_model.provider_part if role == "crypto_provider" else shared_model.worker_parts[party]
        return torch_saved(part)

    return saved


@pytest.fixture
def canary(tmp_path):
    """Where a payload would leave its mark; the test asserts it never exists."""
    return tmp_path / "canary"


@pytest.fixture
def upload_share(api, register, shared_model, part_bytes):
    """Register `model_id` (unless told not to) and upload a part as multipart; asserts a 201."""

    def post(model_id: str, role: str = "worker", party: int | None = 0, *, registered=False, **flags) -> dict:
        if not registered:
            register(model_id)
        body = {
            "role": role,
            "spec": json.dumps(shared_model.spec.to_json()),
            "share": io.BytesIO(part_bytes(role, party)),
            **{name: str(value) for name, value in flags.items()},
        }
        if party is not None:
            body["party"] = str(party)
        response = api.post(f"/encrypted-models/{model_id}/share", body, format="multipart")
        assert response.status_code == 201, response.content
        return response.json()

    return post
