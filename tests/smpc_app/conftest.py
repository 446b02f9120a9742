"""Fixtures for the encrypted-model tests."""

import pytest

from tests.smpc_app.helpers import ALICE, BOB, CRYPTO


@pytest.fixture
def register(api):
    """Register an encrypted model over HTTP (two workers and a provider unless told); asserts a 201."""

    def post(model_id: str, workers=(ALICE, BOB), crypto_provider=(CRYPTO,), **extra) -> dict:
        body = {"model_id": model_id, "workers": list(workers), "crypto_provider": list(crypto_provider), **extra}
        response = api.post("/encrypted-models", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return post
