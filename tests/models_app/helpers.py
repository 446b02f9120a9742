"""The hosted models as a resource of the shared id cases (tests/api_cases.py)."""

import pytest

from models_app.models import HostedModel
from tests.api_cases import ResourceCases


class HostedModelCases(ResourceCases):
    """A hosted model: a row and its archive, made by /serve-model with download and inference allowed."""

    model = HostedModel
    id_column = "model_id"
    file_field = "archive"
    id_field = "model_id"
    error_fields = {"success": False}
    not_found = "Model not found."

    @pytest.fixture
    def make(self, serve, mlp_jit):
        return lambda model_id: serve(model_id, mlp_jit, allow_download=True, allow_remote_inference=True)
