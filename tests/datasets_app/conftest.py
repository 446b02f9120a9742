"""Fixtures for the dataset endpoints: uploads over HTTP."""

import pytest


@pytest.fixture
def upload(api):
    """Create a dataset over HTTP from a JSON array (plus any body fields); asserts a 201."""

    def create(dataset_id: str | None = None, tags=(), **fields):
        body = {"tags": list(tags), "data": [[1.0, 2.0], [3.0, 4.0]], **fields}
        if dataset_id is not None:
            body["id"] = dataset_id
        response = api.post("/datasets", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return create
