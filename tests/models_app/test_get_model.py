"""GET /get_model/<id>: the archive as latin-1 or base64 text, or raw bytes; and it loads again."""

import base64
import io

import pytest
import torch

from tests.api_cases import PathIdRuleCases, UnknownIdCases
from tests.models_app.helpers import HostedModelCases

pytestmark = pytest.mark.django_db


class TestIdCases(HostedModelCases, UnknownIdCases, PathIdRuleCases):
    path = "/get_model/{id}"


def test_it_returns_the_archive_as_latin1_text_that_loads(api, serve, mlp_jit):
    serve("mlp", mlp_jit, allow_download=True)
    response = api.get("/get_model/mlp")

    assert response.status_code == 200
    raw = response.json()["serialized_model"].encode("latin-1")
    assert raw == mlp_jit
    model = torch.jit.load(io.BytesIO(raw))
    x = torch.rand(2, 4)
    assert torch.equal(model(x), torch.jit.load(io.BytesIO(mlp_jit))(x))


def test_it_returns_base64_when_asked(api, serve, mlp_plan):
    serve("plan", mlp_plan, allow_download=True)
    response = api.get("/get_model/plan/?encoding=base64")

    assert response.status_code == 200
    raw = base64.b64decode(response.json()["serialized_model"])
    assert raw == mlp_plan
    program = torch.export.load(io.BytesIO(raw))
    x = torch.rand(2, 4)
    assert torch.allclose(program.module()(x), torch.export.load(io.BytesIO(mlp_plan)).module()(x))


def test_it_returns_raw_bytes_for_octet_stream(api, serve, mlp_plan):
    serve("plan", mlp_plan, allow_download=True)
    response = api.get("/get_model/plan", HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert 'filename="plan.pt2"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == mlp_plan


def test_it_answers_403_when_downloads_are_not_allowed(api, serve, mlp_jit):
    serve("closed", mlp_jit, allow_remote_inference=True)
    for accept in ["application/json", "application/octet-stream"]:
        response = api.get("/get_model/closed", HTTP_ACCEPT=accept)
        assert response.status_code == 403
        assert response.json() == {"success": False, "error": "You're not allowed to download this model."}


def test_it_answers_400_for_an_unknown_encoding(api, serve, mlp_jit):
    serve("mlp", mlp_jit, allow_download=True)
    response = api.get("/get_model/mlp?encoding=hex")

    assert response.status_code == 400
    assert "Unknown encoding" in response.json()["error"]


@pytest.mark.parametrize("accept", ["application/json", "application/octet-stream"])
def test_it_answers_404_when_the_archive_went_with_a_concurrent_delete(api, serve, mlp_jit, accept):
    """The row was read, then another request's delete removed the file: as if this request came later."""
    from django.core.files.storage import default_storage

    from models_app.models import HostedModel

    serve("racing", mlp_jit, allow_download=True)
    default_storage.delete(HostedModel.objects.get(model_id="racing").archive.name)

    response = api.get("/get_model/racing", HTTP_ACCEPT=accept)

    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "Model not found."}
