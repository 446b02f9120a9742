"""What a hosted model's tensors are called and typed on the Open Inference Protocol (KServe v2).

The v2 datatypes and their torch counterparts, and each model's signature: the names, datatypes and shapes
of its inputs and outputs as its archive records them. A TorchScript model's tensors are `input__N` /
`output__N` (Triton's PyTorch convention); a torch.export model's are the names in its export signature,
and `input__N` / `output__N` work too.
"""

from dataclasses import dataclass
from typing import cast
from weakref import WeakKeyDictionary

import numpy as np
import torch

from models_app.archives import PLAN, LoadedModel

PLATFORMS = {PLAN: "pytorch_export", "jit": "pytorch_torchscript"}
# What the metadata says for a tensor whose archive does not record it (TorchScript records neither
# dtypes nor shapes): FP32, the datatype the node assumes for untyped data, and "any shape".
UNDECLARED_DATATYPE = "FP32"
UNDECLARED_SHAPE = (-1,)


@dataclass(frozen=True)
class Datatype:
    """A v2 tensor datatype and how it maps onto torch and numpy."""

    name: str
    torch: torch.dtype
    numpy: np.dtype | None  # None for BF16, which numpy lacks
    itemsize: int
    json_kinds: str  # numpy dtype kinds accepted from JSON data
    json_words: str

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self.numpy is None or self.numpy.kind not in "iu":
            return None
        info = np.iinfo(self.numpy)
        return int(info.min), int(info.max)


def _datatypes() -> dict[str, Datatype]:
    numbers, integers = ("iuf", "numbers"), ("iu", "whole numbers")
    table = [
        ("BOOL", torch.bool, np.dtype(np.bool_), ("b", "true/false values")),
        ("UINT8", torch.uint8, np.dtype(np.uint8), integers),
        ("INT8", torch.int8, np.dtype(np.int8), integers),
        ("INT16", torch.int16, np.dtype(np.int16), integers),
        ("INT32", torch.int32, np.dtype(np.int32), integers),
        ("INT64", torch.int64, np.dtype(np.int64), integers),
        ("FP16", torch.float16, np.dtype(np.float16), numbers),
        ("FP32", torch.float32, np.dtype(np.float32), numbers),
        ("FP64", torch.float64, np.dtype(np.float64), numbers),
        ("BF16", torch.bfloat16, None, numbers),
    ]
    return {
        name: Datatype(name, dtype, np_dtype, torch.empty(0, dtype=dtype).element_size(), *json_rule)
        for name, dtype, np_dtype, json_rule in table
    }


DATATYPES = _datatypes()
DATATYPE_BY_TORCH = {datatype.torch: datatype for datatype in DATATYPES.values()}
DATATYPE_NAMES = ", ".join(DATATYPES)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the metadata describes it; `declared` is whether the archive said so."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    declared: bool

    def as_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs, and the names each may be called by (own name or `input__N`)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_position(self, name) -> int | None:
        return _position(name, self.inputs, "input__")

    def output_position(self, name, count: int) -> int | None:
        position = _position(name, self.outputs, "output__")
        return position if position is not None and position < count else None

    def output_name(self, position: int) -> str:
        return self.outputs[position].name if position < len(self.outputs) else f"output__{position}"

    def names(self, specs: tuple[TensorSpec, ...]) -> str:
        return ", ".join(spec.name for spec in specs) or "none"


def _position(name, specs: tuple[TensorSpec, ...], prefix: str) -> int | None:
    if not isinstance(name, str):
        return None
    for position, spec in enumerate(specs):
        if spec.name == name:
            return position
    digits = name[len(prefix) :] if name.startswith(prefix) else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 9:  # "²" is a digit to isdigit, not to int
        position = int(digits)
        # Outputs past the metadata's count (a model may return more than its schema shows) are allowed.
        return position if position < len(specs) or prefix == "output__" else None
    return None


# Keyed by the loaded module, so an entry goes when the model cache lets the model go.
_signatures: "WeakKeyDictionary[torch.nn.Module, Signature]" = WeakKeyDictionary()


def model_signature(loaded: LoadedModel) -> Signature:
    """The inputs and outputs of a loaded model, as far as its archive records them."""
    signature = _signatures.get(loaded.module)
    if signature is None:
        signature = _plan_signature(loaded.module) if loaded.kind == PLAN else _jit_signature(loaded.module)
        _signatures[loaded.module] = signature
    return signature


def _jit_signature(module) -> Signature:
    schema = module.forward.schema
    inputs = tuple(
        TensorSpec(f"input__{position}", UNDECLARED_DATATYPE, UNDECLARED_SHAPE, declared=False)
        for position in range(len(schema.arguments) - 1)  # less `self`
    )
    returned = schema.returns[0].type if len(schema.returns) == 1 else None
    count = len(returned.elements()) if isinstance(returned, torch.TupleType) else max(len(schema.returns), 1)
    outputs = tuple(
        TensorSpec(f"output__{position}", UNDECLARED_DATATYPE, UNDECLARED_SHAPE, declared=False)
        for position in range(count)
    )
    return Signature(inputs, outputs)


def _plan_signature(module: torch.nn.Module) -> Signature:
    # The unlifted program keeps torch.export's placeholder metadata: the signature's input names as
    # targets, and a fake tensor with dtype and shape (symbolic dimensions where export made them dynamic).
    inputs, outputs = [], []
    # A PLAN model is the unlifted program: a GraphModule.
    for node in cast(torch.fx.GraphModule, module).graph.nodes:
        if node.op == "placeholder":
            inputs.append(_spec(str(node.target), node.meta.get("val")))
        elif node.op == "output":
            returned = node.args[0] if node.args else ()
            for position, value in enumerate(returned if isinstance(returned, list | tuple) else [returned]):
                if isinstance(value, torch.fx.Node):
                    outputs.append(_spec(value.name, value.meta.get("val")))
                else:
                    outputs.append(_spec(f"output__{position}", None))
    return Signature(tuple(inputs), tuple(outputs))


def _spec(name: str, value) -> TensorSpec:
    datatype = DATATYPE_BY_TORCH.get(value.dtype) if isinstance(value, torch.Tensor) else None
    if not isinstance(value, torch.Tensor) or datatype is None:
        return TensorSpec(name, UNDECLARED_DATATYPE, UNDECLARED_SHAPE, declared=False)
    shape = tuple(size if isinstance(size, int) else -1 for size in value.shape)
    return TensorSpec(name, datatype.name, shape, declared=True)
