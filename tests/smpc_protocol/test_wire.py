"""The message format: named int64 tensors behind a JSON header, read from untrusted bytes."""

import json
import struct

import pytest
import torch

from smpc_protocol import wire
from smpc_protocol.wire import WireError


def message(header, body: bytes = b"") -> bytes:
    """Raw bytes with a hand-written header (a JSON-able value, or bytes taken as they are)."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return wire.MAGIC + struct.pack(">I", len(encoded)) + encoded + body


def words(count: int) -> bytes:
    return torch.arange(count, dtype=torch.int64).numpy().tobytes()


def test_it_round_trips_tensors_and_meta():
    tensors = {
        "x": torch.tensor([[-(2**63), 2**63 - 1], [0, -1]]),
        "empty": torch.zeros(0, dtype=torch.int64),
        "empty rows": torch.zeros(0, 3, dtype=torch.int64),
        "scalar": torch.tensor(7),
        "transposed": torch.arange(12).reshape(3, 4).T,
        "ünïcode name": torch.arange(5),
    }
    meta = {"session": "abc", "party": 1, "nested": {"list": [1, 2.5, None, True]}}

    unpacked, unpacked_meta = wire.unpack(wire.pack(tensors, meta))

    assert list(unpacked) == list(tensors)
    for name, tensor in tensors.items():
        assert unpacked[name].dtype == torch.int64
        assert unpacked[name].shape == tensor.shape
        assert torch.equal(unpacked[name], tensor)
    assert unpacked_meta == meta


def test_it_round_trips_an_empty_message():
    assert wire.unpack(wire.pack({})) == ({}, {})


def test_unpacked_tensors_own_their_memory():
    raw = bytearray(wire.pack({"x": torch.arange(4)}))

    tensors, _ = wire.unpack(bytes(raw))
    tensors["x"] += 1

    assert wire.unpack(bytes(raw))[0]["x"].tolist() == [0, 1, 2, 3]


def test_it_accepts_a_memoryview():
    assert wire.unpack(memoryview(wire.pack({"x": torch.arange(2)})))[0]["x"].tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.bool])
def test_it_packs_int64_tensors_only(dtype):
    with pytest.raises(TypeError, match="int64"):
        wire.pack({"x": torch.zeros(2, dtype=dtype)})


MALFORMED = {
    "nothing": b"",
    "bad magic": b"GNS2" + wire.pack({})[4:],
    "magic only": wire.MAGIC,
    "cut length": wire.MAGIC + b"\x00\x00",
    "cut header": wire.pack({"x": torch.arange(2)})[:20],
    "header longer than the message": wire.MAGIC + struct.pack(">I", 100) + b"{}",
    "header over the limit": wire.MAGIC + struct.pack(">I", wire.MAX_HEADER_BYTES + 1) + b" " * 10,
    "header not JSON": message(b"{tensors: []}"),
    "header not UTF-8": message(b'{"tensors": [], "meta": {"\xff": 1}}'),
    "header too deeply nested": message(b"[" * 100_000 + b"]" * 100_000),
    "meta too deeply nested": message(b'{"tensors": [], "meta": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001),
    "header a list": message([["x", [1]]]),
    "no tensor list": message({"meta": {}}),
    "tensor list an object": message({"tensors": {"x": [1]}}),
    "meta a list": message({"tensors": [], "meta": []}),
    "entry an object": message({"tensors": [{"name": "x", "shape": [1]}]}, words(1)),
    "entry of three items": message({"tensors": [["x", [1], "int64"]]}, words(1)),
    "name not text": message({"tensors": [[1, [1]]]}, words(1)),
    "shape not a list": message({"tensors": [["x", 1]]}, words(1)),
    "nine dimensions": message({"tensors": [["x", [1] * 9]]}, words(1)),
    "negative size": message({"tensors": [["x", [-1]]]}),
    "negative sizes that multiply to a positive count": message({"tensors": [["x", [-1, -2]]]}, words(2)),
    "boolean size": message({"tensors": [["x", [True]]]}, words(1)),
    "float size": message({"tensors": [["x", [1.0]]]}, words(1)),
    "text size": message({"tensors": [["x", ["1"]]]}, words(1)),
    "duplicate names": message({"tensors": [["x", [1]], ["x", [1]]]}, words(2)),
    "body shorter than the shapes": message({"tensors": [["x", [2, 3]]]}, words(5)),
    "body a few bytes short": message({"tensors": [["x", [2]]]}, words(2)[:-1]),
    "trailing bytes": message({"tensors": [["x", [2]]]}, words(2) + b"\x00"),
    "trailing word": message({"tensors": [["x", [2]]]}, words(3)),
    "huge declared shape": message({"tensors": [["x", [2**40, 2**40]]]}, words(4)),
    "huge size in an empty tensor": message({"tensors": [["x", [0, 2**63]]]}),
    "astronomic size in an empty tensor": message({"tensors": [["x", [0, 10**100]]]}),
    "empty tensor whose sizes overflow": message({"tensors": [["x", [2**62, 2**62, 2**62, 0]]]}),
    "too many tensors": message({"tensors": [[f"t{index}", [0]] for index in range(wire.MAX_TENSORS + 1)]}),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_it_refuses_malformed_bytes_with_wire_error_only(raw):
    with pytest.raises(WireError):
        wire.unpack(raw)


def test_every_cut_of_a_message_is_refused():
    raw = wire.pack({"x": torch.arange(6).reshape(2, 3), "y": torch.tensor([5])}, {"session": "s"})

    for length in range(len(raw)):
        with pytest.raises(WireError):
            wire.unpack(raw[:length])


def test_a_corrupted_header_is_refused_or_read_never_crashes():
    raw = wire.pack({"x": torch.arange(6).reshape(2, 3), "y": torch.tensor([5])}, {"session": "s"})
    header_end = 8 + struct.unpack(">I", raw[4:8])[0]

    for position in range(header_end):
        for replacement in b'\x00"[]{},:-019e \xff':
            corrupted = raw[:position] + bytes([replacement]) + raw[position + 1 :]
            try:
                tensors, meta = wire.unpack(corrupted)
            except WireError:
                continue
            assert all(tensor.dtype == torch.int64 for tensor in tensors.values())
            assert isinstance(meta, dict)


def test_unpack_meta_reads_the_header_only():
    raw = wire.pack({"x": torch.arange(6).reshape(2, 3)}, {"session": "s", "round": 4})

    assert wire.unpack_meta(raw) == {"session": "s", "round": 4}
    assert wire.unpack_meta(raw) == wire.unpack(raw)[1]
    with pytest.raises(wire.WireError):
        wire.unpack_meta(b"GNS1\x00\x00\x00\x05{oops")
    with pytest.raises(wire.WireError):
        wire.unpack_meta(b"nope")
