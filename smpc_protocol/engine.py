"""One worker's side of a secret-shared evaluation: layer by layer on its shares, opening only masked values.

Per layer (N inputs; every value below is this party's share unless it is "opened"):

- Linear / Conv2d: open E = x - A (A from the provider, fresh per session). With the stored F = W - B
  and the share of B, x W = E F + E B + A F + A B, where A B = C also comes from the provider. One round.
- ReLU: the sign of x = x0 + x1 is the top bit of that sum, computed on XOR-shared bits: the parties'
  own shares are the two addends, AND gates use the provider's triples, and a Kogge-Stone prefix gives
  the carry into bit 63 (six rounds: its first two steps share one, see `_first_carry_levels`). The sign
  s is then opened masked by a random shared bit r (c = s XOR r), turned into an arithmetic share, and
  s * x is one Beaver product whose masked operand x - A was opened in the first round.
  ReLU(x) = x - s x. Seven rounds; no party learns s or x.
- AvgPool2d, Flatten: public linear maps, no rounds.

After each product, shares are truncated locally (`ring.truncate`).
"""

import hashlib
from typing import Protocol

import torch

from smpc_protocol import ring
from smpc_protocol.hosting import BIAS, MASKED_WEIGHT, WEIGHT_MASK, tensor_name
from smpc_protocol.maps import add_bias, pool_scale, product, window_sums
from smpc_protocol.randomness import CARRY_LEVELS, CARRY_SHIFTS, and_triple_name, bundle_shapes
from smpc_protocol.spec import AVGPOOL2D, FLATTEN, RELU, WEIGHTED, ModelSpec

AGREEMENT = "agreement"


class ProtocolError(Exception):
    """The parties disagree (model, batch, randomness or message shape): the evaluation stops, no answer."""


class Channel(Protocol):
    """Sends this party's message for the next round and returns the peer's message for the same round."""

    def exchange(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


def count_rounds(spec: ModelSpec) -> int:
    """How many exchanges between the workers one evaluation of `spec` takes."""
    per_kind = {RELU: len(CARRY_LEVELS) + 1}
    return sum(per_kind.get(layer.kind, 1 if layer.kind in WEIGHTED else 0) for layer in spec.layers)


def agreement_words(text: str) -> torch.Tensor:
    """Something both parties must hold the same of (model digest, batch, randomness id) as int64 words."""
    return torch.frombuffer(bytearray(hashlib.sha256(text.encode()).digest()), dtype=torch.int64).clone()


class Evaluation:
    """One party's evaluation of one model on one batch of input shares."""

    def __init__(
        self,
        *,
        spec: ModelSpec,
        part: dict[str, torch.Tensor],
        party: int,
        bundle: dict[str, torch.Tensor],
        channel: Channel,
        agreement: str,
    ) -> None:
        if party not in (0, 1):
            raise ValueError("party must be 0 or 1")
        self.spec, self.part, self.party, self.bundle, self.channel = spec, part, party, bundle, channel
        self.rounds = 0
        self._agreement: torch.Tensor | None = agreement_words(agreement)

    def run(self, inputs: torch.Tensor) -> torch.Tensor:
        """This party's share of the model's output for its share of the inputs."""
        self._check_inputs(inputs)
        x = inputs
        for index, layer in enumerate(self.spec.layers):
            if layer.kind in WEIGHTED:
                x = self._weighted(index, x)
            elif layer.kind == RELU:
                x = self._relu(index, x)
            elif layer.kind == AVGPOOL2D:
                x = ring.truncate(window_sums(layer, x) * pool_scale(layer, ring.FRACTION_BITS), self.party)
            elif layer.kind == FLATTEN:
                x = x.reshape(x.shape[0], -1)
        return x

    def _check_inputs(self, inputs: torch.Tensor) -> None:
        """ProtocolError unless the inputs fit the model and the provider's bundle was dealt for their batch.

        Without this, shares of fewer inputs than the bundle's batch would broadcast against its masks and
        the evaluation would return a wrong answer instead of stopping.
        """
        if inputs.dtype != torch.int64 or inputs.dim() < 1 or tuple(inputs.shape[1:]) != self.spec.input_shape:
            raise ProtocolError(f"the input shares must be int64, one {list(self.spec.input_shape)} tensor per input")
        expected = bundle_shapes(self.spec, inputs.shape[0])
        if set(self.bundle) != set(expected) or any(
            self.bundle[name].dtype != torch.int64 or tuple(self.bundle[name].shape) != shape
            for name, shape in expected.items()
        ):
            raise ProtocolError("the provider's randomness is for another model or batch than the inputs")

    def _open(self, additive: dict[str, torch.Tensor], xor: dict[str, torch.Tensor] | None = None):
        """Exchange masked values with the peer and return them opened (sums, or XORs for bit words)."""
        xor = xor or {}
        message = {**additive, **xor}
        if self._agreement is not None:
            message[AGREEMENT] = self._agreement
        peer = dict(self.channel.exchange(message))
        self.rounds += 1
        if set(peer) != set(message):
            raise ProtocolError("the peer worker sent a message for a different step of the protocol")
        for name, tensor in message.items():
            if peer[name].dtype != torch.int64 or peer[name].shape != tensor.shape:
                raise ProtocolError(f"the peer worker's '{name}' has the wrong shape: the inputs' batches differ")
        if self._agreement is not None:
            if not torch.equal(peer.pop(AGREEMENT), self._agreement):
                raise ProtocolError(
                    "the workers disagree on the model, the batch or the provider's randomness for this session"
                )
            self._agreement = None
        opened = {name: value + peer[name] for name, value in additive.items()}
        opened.update({name: value ^ peer[name] for name, value in xor.items()})
        return opened

    def _weighted(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """A Linear or Conv2d layer: one Beaver product with the fixed weight mask, bias, truncation."""
        layer = self.spec.layers[index]
        outputs = self.spec.input_shape_of(index + 1)
        mask_share = self.bundle[f"{index}.A"]
        opened = self._open({"x": x - mask_share})["x"]
        masked_weight = self.part[tensor_name(index, MASKED_WEIGHT)]
        weight_mask = self.part[tensor_name(index, WEIGHT_MASK)]
        # E F is counted once, by party 0: E (F + B0) for party 0, E B1 for party 1.
        opened_side = masked_weight + weight_mask if self.party == 0 else weight_mask
        result = (
            product(layer, opened, opened_side, outputs)
            + product(layer, mask_share, masked_weight, outputs)
            + self.bundle[f"{index}.C"]
        )
        bias_name = tensor_name(index, BIAS)
        if bias_name in self.part:
            result = add_bias(layer, result, self.part[bias_name])
        return ring.truncate(result, self.party)

    def _and(self, index: int, level: int, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], extra=None):
        """Bitwise ANDs of XOR-shared words (Beaver AND triples), all in one round; `extra` rides along."""
        xor_message = {}
        triples = {}
        for word, (left, right) in pairs.items():
            u, v, w = (self.bundle[and_triple_name(index, level, word, part)] for part in "uvw")
            triples[word] = (u, v, w)
            xor_message[f"{word}.d"] = left ^ u
            xor_message[f"{word}.e"] = right ^ v
        opened = self._open(extra or {}, xor_message)
        results = {}
        for word, (u, v, w) in triples.items():
            d, e = opened[f"{word}.d"], opened[f"{word}.e"]
            result = (d & v) ^ (e & u) ^ w
            results[word] = result ^ (d & e) if self.party == 0 else result
        return results, opened

    def _first_carry_levels(self, index: int, x: torch.Tensor, extra: dict[str, torch.Tensor]):
        """XOR shares of the carry and propagate words after the prefix's first two steps, in one round;
        and what `extra` opened in the same round.

        The binary addends are the parties' own shares, a = x0 and b = x1 (each XOR-shared with a zero).
        With a' = a << 1 and b' = b << 1, the steps give g = ab ^ (a ^ b) a'b' and p = (a ^ b)(a' ^ b').
        Expanded, every term is a word of a alone, a word of b alone, or the AND of one of each:
        g = ab ^ (aa') b' ^ a' (bb') and p = aa' ^ bb' ^ ab' ^ a'b, so five ANDs of a word party 0 makes
        from its share with a word party 1 makes from its own, all in one round.
        """
        zeros = torch.zeros_like(x)
        shifted = x << 1
        if self.party == 0:  # the left operands: a, aa', a', a, a'
            left = {"g": x, "ga": x & shifted, "gb": shifted, "pa": x, "pb": shifted}
            pairs = {word: (value, zeros) for word, value in left.items()}
        else:  # the right operands: b, b', bb', b', b
            right = {"g": x, "ga": shifted, "gb": x & shifted, "pa": shifted, "pb": x}
            pairs = {word: (zeros, value) for word, value in right.items()}
        words, opened = self._and(index, 0, pairs, extra=extra)
        carry = words["g"] ^ words["ga"] ^ words["gb"]
        propagate = (x & shifted) ^ words["pa"] ^ words["pb"]
        return carry, propagate, opened

    def _relu(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """max(x, 0) on shares (see the module docstring)."""
        mask_share = self.bundle[f"{index}.A"]
        carry, propagate, opened = self._first_carry_levels(index, x, extra={"x": x - mask_share})
        opened_x = opened["x"]
        for level, shift in enumerate(CARRY_SHIFTS[1:], start=1):
            pairs = {"g": (propagate, carry << shift)}
            if "p" in CARRY_LEVELS[level]:
                pairs["p"] = (propagate, propagate << shift)
            words, _ = self._and(index, level, pairs)
            carry = carry ^ words["g"]
            propagate = words.get("p", propagate)
        sign = ((x >> 63) & 1) ^ ((carry >> 62) & 1)
        flipped = self._open({}, {"c": sign ^ self.bundle[f"{index}.r_bit"]})["c"]
        # s = c + r - 2cr with c public; s*x = s*(x - A) + c*A + (1 - 2c) * (r*A).
        keep = 1 - 2 * flipped
        sign_share = self.bundle[f"{index}.r"] * keep
        if self.party == 0:
            sign_share = sign_share + flipped
        negative_part = sign_share * opened_x + flipped * mask_share + keep * self.bundle[f"{index}.rA"]
        return x - negative_part
