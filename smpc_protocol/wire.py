"""Named int64 tensors on the wire: a small JSON header, then the raw little-endian bytes.

Used for every SMPC message (client to worker, worker to worker, provider to worker). `unpack` reads
untrusted bytes: it checks the header's size, names and shapes against the body before touching it.
"""

import json
import struct
import sys

import torch

MAGIC = b"GNS1"
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 4096
_HEADER_LENGTH = struct.Struct(">I")


class WireError(ValueError):
    """Bytes that are not a well-formed message."""


def pack(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> bytes:
    """A message of named int64 tensors and a JSON-able `meta` object."""
    entries = []
    chunks = []
    for name, tensor in tensors.items():
        if tensor.dtype != torch.int64:
            raise TypeError(f"'{name}' is {tensor.dtype}, messages carry int64 tensors only")
        entries.append([name, list(tensor.shape)])
        data = tensor.contiguous().numpy()
        chunks.append(data.tobytes() if sys.byteorder == "little" else data.byteswap().tobytes())
    header = json.dumps({"tensors": entries, "meta": meta or {}}, separators=(",", ":")).encode()
    return b"".join([MAGIC, _HEADER_LENGTH.pack(len(header)), header, *chunks])


def _header(view: memoryview) -> tuple[list, dict, int]:
    """A message's tensor entries (unchecked), its meta object and the header's length in bytes."""
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise WireError("not an SMPC message (bad magic)")
    (header_length,) = _HEADER_LENGTH.unpack(view[4:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(view):
        raise WireError("the message header is cut or too large")
    try:
        header = json.loads(bytes(view[8 : 8 + header_length]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: deeply nested arrays or objects, which fit well within MAX_HEADER_BYTES.
        raise WireError("the message header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise WireError("the message header has no tensor list")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise WireError("the message meta is not an object")
    return header["tensors"], meta, header_length


def unpack_meta(raw: bytes) -> dict:
    """Only a message's meta object, read from its header (to route it); WireError for a bad header."""
    return _header(memoryview(raw))[1]


def unpack(raw: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and meta object of a message; WireError for anything malformed."""
    view = memoryview(raw)
    entries, meta, header_length = _header(view)
    if len(entries) > MAX_TENSORS:
        raise WireError("the message holds too many tensors")
    offset = 8 + header_length
    tensors: dict[str, torch.Tensor] = {}
    for entry in entries:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], list)
            or len(entry[1]) > 8
            or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in entry[1])
        ):
            raise WireError("a tensor entry in the message header is malformed")
        name, shape = entry
        if name in tensors:
            raise WireError(f"the message names '{name[:100]}' twice")
        count, extent = 1, 1
        for size in shape:
            count *= size
            extent *= max(size, 1)
        # An empty tensor's body is empty whatever its other sizes, but torch still needs them (and their
        # product) to fit in int64.
        if extent >= 2**63:
            raise WireError("a tensor in the message header has sizes too large for a tensor")
        end = offset + 8 * count
        if end > len(view):
            raise WireError("the message body is shorter than its header says")
        tensor = torch.frombuffer(bytearray(view[offset:end]), dtype=torch.int64) if count else torch.zeros(0)
        if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
            tensor = torch.from_numpy(tensor.numpy().byteswap())
        tensors[name] = tensor.to(torch.int64).reshape(shape)
        offset = end
    if offset != len(view):
        raise WireError("the message body is longer than its header says")
    return tensors, meta
