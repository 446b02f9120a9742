"""Tensors as the node's inference endpoint carries them: `torch.save` bytes, base64 text in JSON."""

import base64
import io
import math

from gridclient.errors import ServerError


def encode(value) -> str:
    """A tensor (or a list of tensors) as base64 `torch.save` bytes; base64 keeps every dtype exact."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return base64.b64encode(buffer.getbuffer()).decode("ascii")


def decode(text) -> object:
    """The tensor(s) in a base64 `torch.save` answer, read without unpickling anything but tensors."""
    import torch

    try:
        raw = base64.b64decode(text, validate=True)
        return torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as exc:  # base64, zip or unpickler failures: in every case the answer is unreadable
        raise ServerError(200, f"The node's prediction could not be read as tensors ({type(exc).__name__}).") from exc


def to_json(value):
    """Tensors as nested lists for printing as JSON; NaN and infinity become null, as the node does."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError("a complex tensor has no JSON form")
        return _finite(value.detach().cpu().tolist())
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return _finite(value)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
