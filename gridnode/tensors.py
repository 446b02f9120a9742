"""Tensors in and out of requests: `torch.save` bytes read safely, and nested JSON lists."""

import io
import math

import numpy
import torch
from django.conf import settings

from gridnode.errors import BadRequest
from gridnode.ziplimits import check_zip, is_zip


def load_tensors(raw: bytes, field: str):
    """A tensor, or a list of tensors, from `torch.save` bytes, never unpickling arbitrary objects."""
    source = io.BytesIO(raw)
    if is_zip(source):
        # torch.load allocates what the zip directory declares: a deflated bomb would unpack here.
        check_zip(source, what=f"'{field}'", max_unpacked_bytes=settings.GRIDNODE_MAX_BODY_BYTES)
    try:
        value = torch.load(source, weights_only=True, map_location="cpu")
    except Exception:
        raise BadRequest(f"'{field}' is not a tensor saved with torch.save (or it holds other objects).") from None
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(item, torch.Tensor) for item in value):
        return list(value)
    raise BadRequest(f"'{field}' must hold a tensor or a list of tensors.")


def dump_tensors(value) -> bytes:
    """`torch.save` bytes of a tensor or a list of tensors."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def tensor_from_json(value, field: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of `dtype` from a (nested) JSON array of numbers (JSON itself carries no dtype)."""
    if isinstance(value, bool) or not isinstance(value, list | int | float):
        raise BadRequest(f"'{field}' must be a (nested) JSON array of numbers.")
    if _has_bool(value):
        raise BadRequest(f"'{field}' must hold numbers, not booleans.")
    try:
        if dtype.is_floating_point:
            return _floats_from_json(value, field).to(dtype)
        return torch.tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise BadRequest(f"'{field}' must be a rectangular (nested) JSON array of numbers.") from None


def _floats_from_json(value, field: str) -> torch.Tensor:
    """Numbers through numpy, three times faster than torch.tensor on a parsed list (measured: 9 us vs
    30 us for the reference MLP's 784 inputs); anything but plain numbers is refused, not coerced."""
    array = numpy.array(value)
    if array.dtype.kind not in "iuf":  # text, null or ragged lists make str/object arrays: not numbers
        raise ValueError(f"{field} holds something other than numbers")
    return torch.from_numpy(array)


def _has_bool(value) -> bool:
    # torch.tensor quietly turns true/false into 1/0 under a numeric dtype; look at the first leaf.
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, bool)


def tensor_to_json(value):
    """A JSON-ready form of a tensor (nested lists) or of a list/tuple of them."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        result = value.tolist()
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return _finite(result)
        return result
    if isinstance(value, list | tuple):
        return [tensor_to_json(item) for item in value]
    if isinstance(value, bool | int | float):
        return _finite(value)
    raise TypeError(f"cannot serialize {type(value).__name__} as JSON")


def _finite(value):
    # JSON has no NaN or infinity; None is what JSON clients of other servers read for them.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
