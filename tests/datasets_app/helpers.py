"""Helpers for the dataset tests: tensors as torch.save bytes, what is on disk, and datasets as a resource
of the shared id cases (tests/api_cases.py)."""

import io

import pytest
import torch

from datasets_app.models import Dataset
from tests.api_cases import ResourceCases


def saved(value) -> bytes:
    """`torch.save` bytes of a tensor (or of anything else torch.save takes)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def stored_files(data_dir) -> list[str]:
    """The tensor files in storage."""
    folder = data_dir / "files" / "datasets"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def staged_files(data_dir) -> list[str]:
    """What is left in the upload staging folder."""
    return sorted(path.name for path in (data_dir / "tmp").iterdir())


class DatasetCases(ResourceCases):
    """A dataset: a row, its tag links and its tensor file, made by POST /datasets with downloads allowed."""

    model = Dataset
    id_column = "dataset_id"
    file_field = "data"
    id_field = "id"
    not_found = "Dataset not found."

    @pytest.fixture
    def make(self, upload):
        return lambda dataset_id: upload(dataset_id, tags=["#shared", "#own"], allow_download=True)

    def related_state(self) -> dict:
        return {"tag_links": Dataset.tags.through.objects.count()}
