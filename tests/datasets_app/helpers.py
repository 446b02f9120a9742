"""Helpers for the dataset tests: tensors as torch.save bytes, and what is on disk."""

import io

import torch


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
