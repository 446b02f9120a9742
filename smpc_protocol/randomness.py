"""The crypto provider's correlated randomness: Beaver pairs for the weighted layers, AND triples and a
random shared bit for each ReLU, all derived from one per-session seed.

Party 0's shares are read straight from a stream keyed by the seed's first PARTY_ZERO_KEY_BYTES ("share0/..."
labels); party 1's are the true values (a stream keyed by the whole seed, "value/..." labels, with products
computed from them) minus party 0's shares. Whichever request comes first, both parties receive consistent
halves, and the provider never needs to keep them. Party 0's half, or the key it is drawn from, does not
determine party 1's: that also depends on the rest of the seed, which party 0 never learns.
"""

import torch

from smpc_protocol.hosting import WEIGHT_MASK, tensor_name
from smpc_protocol.maps import product
from smpc_protocol.prg import KeyStream
from smpc_protocol.spec import RELU, WEIGHTED, ModelSpec

# A session seed's length, and the leading part of it that party 0's half is drawn from (alone).
SEED_BYTES = 32
PARTY_ZERO_KEY_BYTES = 16

# The ReLU's carry computation (a Kogge-Stone prefix over the 63 low bits) on generate ("g") and propagate
# ("p") words, one round of AND gates per level. The first level does the first two steps of the prefix
# (the parties' words ANDed, then combined at shift 1) at once: each of its words is the AND of a word
# party 0 makes from its own share with one party 1 makes from its own (see `engine.Evaluation`). Each
# later level combines g and p words at the next shift; the last needs g only.
CARRY_SHIFTS = (1, 2, 4, 8, 16, 32)
CARRY_LEVELS: tuple[tuple[str, ...], ...] = (
    ("g", "ga", "gb", "pa", "pb"),
    *(("g", "p") for _ in CARRY_SHIFTS[1:-1]),
    ("g",),
)


def and_triple_name(layer_index: int, level: int, word: str, part: str) -> str:
    """The name of one AND triple's component: part is u, v or w (w = u AND v)."""
    return f"{layer_index}.and{level}{word}.{part}"


def bundle_shapes(spec: ModelSpec, batch: int) -> dict[str, tuple[int, ...]]:
    """Every tensor one party's bundle holds for a batch, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(spec.layers):
        inputs = (batch, *spec.input_shape_of(index))
        if layer.kind in WEIGHTED:
            shapes[f"{index}.A"] = inputs
            shapes[f"{index}.C"] = (batch, *spec.input_shape_of(index + 1))
        elif layer.kind == RELU:
            for level, words in enumerate(CARRY_LEVELS):
                for word in words:
                    for part in "uvw":
                        shapes[and_triple_name(index, level, word, part)] = inputs
            for name in ("A", "rA", "r", "r_bit"):
                shapes[f"{index}.{name}"] = inputs
    return shapes


class _Dealer:
    """Hands out one party's half of each correlated value, computing true values only for party 1."""

    def __init__(self, seed: bytes, party: int) -> None:
        if len(seed) < SEED_BYTES:
            raise ValueError(f"a session seed must have at least {SEED_BYTES} bytes")
        self._shares = KeyStream(seed[:PARTY_ZERO_KEY_BYTES])
        self._stream = KeyStream(seed)
        self._party = party
        self._values: dict[str, torch.Tensor] = {}
        self.bundle: dict[str, torch.Tensor] = {}

    def value(self, name: str, shape, *, bit: bool = False) -> torch.Tensor:
        """A uniform true value (a ring element, or a 0/1 bit), the same on every call for the name."""
        if name not in self._values:
            draw = self._stream.bits if bit else self._stream.ring
            self._values[name] = draw(f"value/{name}", shape)
        return self._values[name]

    def deal(self, name: str, shape, compute_value, *, xor: bool = False, bit: bool = False) -> None:
        """Add this party's share of `compute_value()` (arithmetic, or XOR when `xor`) to the bundle."""
        draw = self._shares.bits if bit else self._shares.ring
        first = draw(f"share0/{name}", shape)
        if self._party == 0:
            self.bundle[name] = first
        elif xor:
            self.bundle[name] = compute_value() ^ first
        else:
            self.bundle[name] = compute_value() - first


def party_bundle(
    *, spec: ModelSpec, provider_part: dict[str, torch.Tensor], batch: int, seed: bytes, party: int
) -> dict[str, torch.Tensor]:
    """Party `party`'s share of every correlated value one evaluation of `spec` on `batch` inputs uses."""
    if party not in (0, 1):
        raise ValueError("party must be 0 or 1")
    dealer = _Dealer(seed, party)
    for index, layer in enumerate(spec.layers):
        inputs = (batch, *spec.input_shape_of(index))
        if layer.kind in WEIGHTED:
            outputs = spec.input_shape_of(index + 1)
            mask = provider_part[tensor_name(index, WEIGHT_MASK)]
            a_name = f"{index}.A"
            dealer.deal(a_name, inputs, lambda name=a_name, shape=inputs: dealer.value(name, shape))
            dealer.deal(
                f"{index}.C",
                (batch, *outputs),
                lambda name=a_name, shape=inputs, layer=layer, mask=mask, outputs=outputs: product(
                    layer, dealer.value(name, shape), mask, outputs
                ),
            )
        elif layer.kind == RELU:
            _deal_relu(dealer, index, inputs)
    return dealer.bundle


def party_zero_bundle(*, spec: ModelSpec, batch: int, key: bytes) -> dict[str, torch.Tensor]:
    """Party 0's half, drawn from the first PARTY_ZERO_KEY_BYTES of the session's seed alone: the same
    tensors `party_bundle` deals party 0, so the provider may send party 0 that key instead of its half."""
    if len(key) != PARTY_ZERO_KEY_BYTES:
        raise ValueError(f"party 0's key has {PARTY_ZERO_KEY_BYTES} bytes")
    shares = KeyStream(key)
    # Every value is a ring element but the random bit r_bit (`_deal_relu`).
    return {
        name: (shares.bits if name.endswith(".r_bit") else shares.ring)(f"share0/{name}", shape)
        for name, shape in bundle_shapes(spec, batch).items()
    }


def _deal_relu(dealer: _Dealer, index: int, shape: tuple[int, ...]) -> None:
    """AND triples for the carry levels, and a random bit r shared both ways with a mask A and r*A."""
    for level, words in enumerate(CARRY_LEVELS):
        for word in words:
            names = {part: and_triple_name(index, level, word, part) for part in "uvw"}
            dealer.deal(names["u"], shape, lambda name=names["u"]: dealer.value(name, shape), xor=True)
            dealer.deal(names["v"], shape, lambda name=names["v"]: dealer.value(name, shape), xor=True)
            dealer.deal(
                names["w"],
                shape,
                lambda names=names: dealer.value(names["u"], shape) & dealer.value(names["v"], shape),
                xor=True,
            )
    bit_name, mask_name = f"{index}.r", f"{index}.A"
    dealer.deal(f"{index}.r_bit", shape, lambda: dealer.value(bit_name, shape, bit=True), xor=True, bit=True)
    dealer.deal(bit_name, shape, lambda: dealer.value(bit_name, shape, bit=True))
    dealer.deal(mask_name, shape, lambda: dealer.value(mask_name, shape))
    dealer.deal(f"{index}.rA", shape, lambda: dealer.value(bit_name, shape, bit=True) * dealer.value(mask_name, shape))
