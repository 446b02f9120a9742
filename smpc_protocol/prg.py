"""A keyed pseudo-random generator: SHAKE-256 of (key, label), read as ring elements or bit words.

The crypto provider derives everything it hands out for one session from one 32-byte seed, so both
workers' requests, whichever process of the provider answers them, see the same correlated randomness.
"""

import hashlib

import torch

from smpc_protocol.ring import ring_from_bytes


class KeyStream:
    """Independent pseudo-random tensors from one secret seed, one per distinct label."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) < 16:
            raise ValueError("a key stream needs a seed of at least 16 bytes")
        self._seed = seed

    def ring(self, label: str, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform int64 ring elements of `shape`, fixed by the seed and the label."""
        # The length prefix keeps one label from being a prefix of another.
        label_bytes = label.encode()
        material = hashlib.shake_256(len(label_bytes).to_bytes(4, "big") + label_bytes + self._seed)
        return ring_from_bytes(shape, material.digest)

    def bits(self, label: str, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform 0/1 values (as int64) of `shape`, fixed by the seed and the label."""
        return self.ring(label, shape) & 1
