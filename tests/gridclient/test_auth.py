"""The client against a live node with token auth on: no token or a wrong one is `Unauthorized`, the
right one (given, or from $GRIDNODE_TOKEN) does everything, and the uploads are recorded as its user's."""

import pytest
import torch
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from datasets_app.models import Dataset
from gridclient import GridNodeClient, Unauthorized, cli
from gridnode.auth import GROUPS
from models_app.models import HostedModel
from tests.conftest import small_mlp

pytestmark = pytest.mark.django_db(transaction=True)

X = [[0.5, -1.0, 2.0, 0.25]]


@pytest.fixture
def closed_node(node, settings) -> str:
    """The live node with every group closed."""
    for group in GROUPS:
        setattr(settings, f"GRIDNODE_AUTH_{group.upper()}", True)
    return node


@pytest.fixture
def key() -> str:
    return Token.objects.create(user=get_user_model().objects.create_user("alice")).key


def test_without_a_token_every_call_is_unauthorized(closed_node):
    client = GridNodeClient(closed_node, progress=False)

    calls = [
        client.models,
        lambda: client.serve_model(small_mlp(), "mlp"),
        lambda: client.run_inference_json("mlp", X),
        lambda: client.download_model("mlp"),
        lambda: client.upload_dataset(torch.rand(2, 2)),
        client.dataset_tags,
    ]
    for call in calls:
        with pytest.raises(Unauthorized) as caught:
            call()
        assert caught.value.status == 401
        assert caught.value.message == "This endpoint needs a token: send 'Authorization: Token <key>'."
    assert not HostedModel.objects.exists()
    assert not Dataset.objects.exists()


def test_a_wrong_token_is_unauthorized(closed_node, key):
    with pytest.raises(Unauthorized, match="Invalid token."):
        GridNodeClient(closed_node, token="0" * 40).models()


def test_the_right_token_does_everything_and_owns_the_uploads(closed_node, key):
    client = GridNodeClient(closed_node, token=key, progress=False)
    module = small_mlp()

    client.serve_model(module, "mlp", allow_download=True, allow_remote_inference=True)
    client.upload_dataset(torch.rand(2, 2), tags=["#t"], dataset_id="rows")

    assert client.models() == ["mlp"]
    expected = module(torch.tensor(X))
    assert torch.allclose(torch.tensor(client.run_inference_json("mlp", X)), expected)
    assert client.is_model_copy_allowed("mlp") is True
    assert isinstance(client.download_model("mlp"), torch.jit.ScriptModule)
    assert client.search("#t") is True
    user = get_user_model().objects.get(username="alice")
    assert HostedModel.objects.get(model_id="mlp").uploaded_by == user
    assert Dataset.objects.get(dataset_id="rows").uploaded_by == user


def test_the_token_comes_from_the_environment(closed_node, key, monkeypatch):
    monkeypatch.setenv("GRIDNODE_TOKEN", key)
    assert GridNodeClient(closed_node).models() == []


def test_the_command_line_exits_9_without_the_token_and_0_with_it(closed_node, key, monkeypatch, capsys):
    assert cli.main(["--url", closed_node, "models"]) == cli.UNAUTHORIZED
    assert capsys.readouterr().err.endswith("(HTTP 401)\n")

    monkeypatch.setenv("GRIDNODE_TOKEN", key)
    assert cli.main(["--url", closed_node, "models"]) == 0
