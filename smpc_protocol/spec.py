"""What an encrypted model is made of: its input shape and layers, as plain JSON that every party checks.

The layers supported are those the protocol can evaluate on shares: Linear and Conv2d (secret weights,
Beaver products), ReLU (secure comparison), AvgPool2d and Flatten (public linear maps). A spec arrives at
nodes from clients, so `ModelSpec.from_json` trusts nothing in it: every number is bounded, and the
shapes must chain.
"""

import hashlib
import json
import math
from dataclasses import dataclass

from torch import nn

SPEC_VERSION = 1
MAX_LAYERS = 64
MAX_DIMENSION = 65_536
MAX_KERNEL = 32
# Bounds on what one model may ask of a node: weights stored and activations held per input.
MAX_WEIGHTS = 50_000_000
MAX_ACTIVATIONS_PER_INPUT = 4_000_000

LINEAR, CONV2D, RELU, AVGPOOL2D, FLATTEN = "linear", "conv2d", "relu", "avgpool2d", "flatten"
# Layers whose weights are secret-shared; the others have no parameters.
WEIGHTED = (LINEAR, CONV2D)


class SpecError(ValueError):
    """A model or a spec the protocol cannot run, with a message that says which part and why."""


@dataclass(frozen=True)
class Layer:
    """One layer: its kind and its (JSON-able) settings."""

    kind: str
    settings: dict

    def to_json(self) -> dict:
        """The layer as a JSON object."""
        return {"type": self.kind, **self.settings}


@dataclass(frozen=True)
class ModelSpec:
    """A supported model's input shape (one input, without the batch) and layers, with the shapes between."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        shapes = [self.input_shape]
        if math.prod(self.input_shape) > MAX_ACTIVATIONS_PER_INPUT:
            raise SpecError(f"the input has more than {MAX_ACTIVATIONS_PER_INPUT} values")
        weights = 0
        for index, layer in enumerate(self.layers):
            shapes.append(_output_shape(layer, shapes[-1], index))
            weights += weight_count(layer)
            if math.prod(shapes[-1]) > MAX_ACTIVATIONS_PER_INPUT:
                raise SpecError(f"layer {index} makes more than {MAX_ACTIVATIONS_PER_INPUT} activations per input")
        if weights > MAX_WEIGHTS:
            raise SpecError(f"the model has more than {MAX_WEIGHTS} weights")
        object.__setattr__(self, "shapes", tuple(shapes))

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output, without the batch."""
        return self.shapes[-1]  # type: ignore[attr-defined]

    def input_shape_of(self, index: int) -> tuple[int, ...]:
        """The shape layer `index` receives, without the batch."""
        return self.shapes[index]  # type: ignore[attr-defined]

    def to_json(self) -> dict:
        """The spec as a JSON object (what `from_json` reads back)."""
        return {
            "version": SPEC_VERSION,
            "input_shape": list(self.input_shape),
            "layers": [layer.to_json() for layer in self.layers],
        }

    def digest(self) -> str:
        """A SHA-256 over the canonical JSON, so that parties can check they run the same model."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_json(cls, value) -> "ModelSpec":
        """A spec from untrusted JSON; SpecError naming the first thing wrong."""
        if not isinstance(value, dict):
            raise SpecError("the spec must be a JSON object")
        unknown = set(value) - {"version", "input_shape", "layers"}
        if unknown:
            raise SpecError(f"the spec has unknown keys: {', '.join(sorted(map(str, unknown)))}")
        # `type` and not ==: true == 1 and 1.0 == 1 in Python, and neither is the version.
        if type(value.get("version")) is not int or value["version"] != SPEC_VERSION:
            raise SpecError(f"the spec's 'version' must be {SPEC_VERSION}")
        input_shape = value.get("input_shape")
        if not isinstance(input_shape, list) or not 1 <= len(input_shape) <= 3:
            raise SpecError("'input_shape' must be a list of 1 to 3 sizes (one input, without the batch)")
        shape = tuple(_positive_int(size, "input_shape", MAX_DIMENSION) for size in input_shape)
        layers = value.get("layers")
        if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
            raise SpecError(f"'layers' must be a list of 1 to {MAX_LAYERS} layers")
        return cls(input_shape=shape, layers=tuple(_layer_from_json(item, index) for index, item in enumerate(layers)))

    @classmethod
    def from_sequential(cls, module: nn.Module, input_shape) -> "ModelSpec":
        """The spec of an `nn.Sequential` of supported layers; SpecError naming the first unsupported one."""
        if not isinstance(module, nn.Sequential):
            raise SpecError("only nn.Sequential models can be secret-shared")
        layers = tuple(_layer_from_module(child, index) for index, child in enumerate(module))
        if not layers:
            raise SpecError("the model has no layers")
        # The same rules as a spec read from JSON, so that every spec made here is one nodes accept.
        layers_json = [layer.to_json() for layer in layers]
        return cls.from_json({"version": SPEC_VERSION, "input_shape": list(input_shape), "layers": layers_json})


def weight_count(layer: Layer) -> int:
    """How many weights (and biases) a layer has."""
    settings = layer.settings
    if layer.kind == LINEAR:
        return settings["in_features"] * settings["out_features"] + settings["out_features"] * settings["bias"]
    if layer.kind == CONV2D:
        kernel = settings["kernel_size"][0] * settings["kernel_size"][1]
        out_channels = settings["out_channels"]
        return settings["in_channels"] * kernel * out_channels + out_channels * settings["bias"]
    return 0


def _positive_int(value, name: str, maximum: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SpecError(f"'{name}' must be an integer from {minimum} to {maximum}")
    return value


def _pair(value, name: str, maximum: int, minimum: int = 1) -> list[int]:
    if not isinstance(value, list) or len(value) != 2:
        raise SpecError(f"'{name}' must be a list of two integers")
    return [_positive_int(item, name, maximum, minimum) for item in value]


_LAYER_KEYS = {
    LINEAR: {"in_features", "out_features", "bias"},
    CONV2D: {"in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"},
    RELU: set(),
    AVGPOOL2D: {"kernel_size", "stride"},
    FLATTEN: set(),
}


def _layer_from_json(value, index: int) -> Layer:
    """One layer from untrusted JSON, every setting checked."""
    if isinstance(value, dict) and "type" in value and not isinstance(value["type"], str):
        # Checked before the lookup below, where a list or an object would be unhashable (TypeError).
        raise SpecError(f"layer {index}: a layer's 'type' must be text, one of: {', '.join(_LAYER_KEYS)}")
    if not isinstance(value, dict) or value.get("type") not in _LAYER_KEYS:
        raise SpecError(f"layer {index} must be an object whose 'type' is one of: {', '.join(_LAYER_KEYS)}")
    kind = value["type"]
    keys = set(value) - {"type"}
    if keys != _LAYER_KEYS[kind]:
        raise SpecError(f"layer {index} ({kind}) must have exactly these settings: {sorted(_LAYER_KEYS[kind])}")
    where = f"layers[{index}]"
    settings: dict[str, int | bool | list[int]]
    if kind == LINEAR:
        settings = {
            "in_features": _positive_int(value["in_features"], f"{where}.in_features", MAX_DIMENSION),
            "out_features": _positive_int(value["out_features"], f"{where}.out_features", MAX_DIMENSION),
            "bias": _boolean(value["bias"], f"{where}.bias"),
        }
    elif kind == CONV2D:
        settings = {
            "in_channels": _positive_int(value["in_channels"], f"{where}.in_channels", MAX_DIMENSION),
            "out_channels": _positive_int(value["out_channels"], f"{where}.out_channels", MAX_DIMENSION),
            "kernel_size": _pair(value["kernel_size"], f"{where}.kernel_size", MAX_KERNEL),
            "stride": _pair(value["stride"], f"{where}.stride", MAX_KERNEL),
            "padding": _pair(value["padding"], f"{where}.padding", MAX_KERNEL, minimum=0),
            "bias": _boolean(value["bias"], f"{where}.bias"),
        }
    elif kind == AVGPOOL2D:
        settings = {
            "kernel_size": _pair(value["kernel_size"], f"{where}.kernel_size", MAX_KERNEL),
            "stride": _pair(value["stride"], f"{where}.stride", MAX_KERNEL),
        }
    else:
        settings = {}
    return Layer(kind, settings)


def _boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"'{name}' must be true or false")
    return value


def _layer_from_module(module: nn.Module, index: int) -> Layer:
    """The layer for one child of an nn.Sequential, or SpecError saying why it cannot be shared."""
    name = f"layer {index} ({type(module).__name__})"
    if type(module) is nn.Linear:
        return Layer(
            LINEAR,
            {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias is not None},
        )
    if type(module) is nn.Conv2d:
        if module.groups != 1 or tuple(module.dilation) != (1, 1) or module.padding_mode != "zeros":
            raise SpecError(f"{name}: only groups=1, dilation=1 and zero padding are supported")
        if isinstance(module.padding, str):
            raise SpecError(f"{name}: give the padding as numbers, not '{module.padding}'")
        return Layer(
            CONV2D,
            {
                "in_channels": module.in_channels,
                "out_channels": module.out_channels,
                "kernel_size": list(module.kernel_size),
                "stride": list(module.stride),
                "padding": list(module.padding),
                "bias": module.bias is not None,
            },
        )
    if type(module) is nn.ReLU:
        return Layer(RELU, {})
    if type(module) is nn.AvgPool2d:
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,) * 2
        if any(padding) or module.ceil_mode or module.divisor_override is not None:
            raise SpecError(f"{name}: only padding=0, ceil_mode=False and no divisor_override are supported")
        kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        stride = module.stride if isinstance(module.stride, tuple) else (module.stride,) * 2
        return Layer(AVGPOOL2D, {"kernel_size": list(kernel), "stride": list(stride)})
    if type(module) is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise SpecError(f"{name}: only Flatten(start_dim=1, end_dim=-1) is supported")
        return Layer(FLATTEN, {})
    raise SpecError(
        f"{name} cannot be secret-shared: supported layers are Linear, Conv2d, ReLU, AvgPool2d and Flatten "
        "(apply softmax to the reconstructed output)"
    )


def _output_shape(layer: Layer, shape: tuple[int, ...], index: int) -> tuple[int, ...]:
    """The shape a layer makes from `shape`, or SpecError when it cannot take that shape."""
    settings = layer.settings
    if layer.kind == LINEAR:
        if shape != (settings["in_features"],):
            raise SpecError(f"layer {index} (linear) takes {settings['in_features']} features, it would get {shape}")
        return (settings["out_features"],)
    if layer.kind in (CONV2D, AVGPOOL2D):
        if len(shape) != 3:
            raise SpecError(f"layer {index} ({layer.kind}) takes (channels, height, width), it would get {shape}")
        channels, height, width = shape
        if layer.kind == CONV2D and channels != settings["in_channels"]:
            raise SpecError(f"layer {index} (conv2d) takes {settings['in_channels']} channels, it would get {channels}")
        padding = settings.get("padding", [0, 0])
        (kernel_h, kernel_w), (stride_h, stride_w) = settings["kernel_size"], settings["stride"]
        out_h = (height + 2 * padding[0] - kernel_h) // stride_h + 1
        out_w = (width + 2 * padding[1] - kernel_w) // stride_w + 1
        if out_h < 1 or out_w < 1:
            raise SpecError(f"layer {index} ({layer.kind}): the kernel is larger than its {height}x{width} input")
        return (settings["out_channels"] if layer.kind == CONV2D else channels, out_h, out_w)
    if layer.kind == FLATTEN:
        return (math.prod(shape),)
    return shape
