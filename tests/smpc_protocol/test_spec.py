"""Model specs: what can be shared, read back from untrusted JSON with nothing but SpecError on bad input."""

import copy
import json

import pytest
from torch import nn

from smpc_protocol import spec
from smpc_protocol.spec import ModelSpec, SpecError


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 2, 3, bias=False),
        nn.Flatten(),
        nn.Linear(2 * 12 * 3, 10),
        nn.ReLU(),
        nn.Linear(10, 3, bias=False),
    )


CNN_SHAPE = (1, 28, 22)


def valid_json() -> dict:
    return ModelSpec.from_sequential(cnn(), CNN_SHAPE).to_json()


def test_it_describes_every_supported_layer():
    described = ModelSpec.from_sequential(cnn(), CNN_SHAPE)

    assert [layer.kind for layer in described.layers] == [
        "conv2d", "relu", "avgpool2d", "conv2d", "flatten", "linear", "relu", "linear",
    ]  # fmt: skip
    assert described.layers[0].settings == {
        "in_channels": 1,
        "out_channels": 4,
        "kernel_size": [3, 2],
        "stride": [1, 2],
        "padding": [1, 0],
        "bias": True,
    }
    assert described.layers[2].settings == {"kernel_size": [2, 2], "stride": [2, 2]}
    assert described.layers[3].settings["bias"] is False
    assert described.layers[5].settings == {"in_features": 72, "out_features": 10, "bias": True}
    assert [described.input_shape_of(index) for index in range(len(described.layers))] == [
        (1, 28, 22), (4, 28, 11), (4, 28, 11), (4, 14, 5), (2, 12, 3), (72,), (10,), (10,),
    ]  # fmt: skip
    assert described.output_shape == (3,)


@pytest.mark.parametrize(
    ("module", "named"),
    [
        (nn.MaxPool2d(2), "layer 1 (MaxPool2d)"),
        (nn.Softmax(dim=1), "layer 1 (Softmax)"),
        (nn.Conv2d(4, 4, 3, groups=2), "layer 1 (Conv2d)"),
        (nn.Conv2d(4, 4, 3, dilation=2), "layer 1 (Conv2d)"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "layer 1 (Conv2d)"),
        (nn.Conv2d(4, 4, 3, padding="same"), "layer 1 (Conv2d)"),
        (nn.AvgPool2d(2, padding=1), "layer 1 (AvgPool2d)"),
        (nn.AvgPool2d(2, ceil_mode=True), "layer 1 (AvgPool2d)"),
        (nn.Flatten(start_dim=2), "layer 1 (Flatten)"),
        (nn.Sigmoid(), "layer 1 (Sigmoid)"),
        (nn.Sequential(nn.ReLU()), "layer 1 (Sequential)"),
    ],
)
def test_it_refuses_unsupported_layers_by_name(module, named):
    with pytest.raises(SpecError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ModelSpec.from_sequential(nn.Sequential(nn.Conv2d(1, 4, 3), module), (1, 8, 8))


def test_it_refuses_models_that_are_not_sequential():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(SpecError, match="nn.Sequential"):
        ModelSpec.from_sequential(Custom(), (4,))
    with pytest.raises(SpecError, match="nn.Sequential"):
        ModelSpec.from_sequential(nn.Linear(4, 2), (4,))
    with pytest.raises(SpecError, match="no layers"):
        ModelSpec.from_sequential(nn.Sequential(), (4,))


def test_it_refuses_layers_whose_shapes_do_not_chain():
    with pytest.raises(SpecError, match="layer 1 .linear. takes 5 features"):
        ModelSpec.from_sequential(nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2)), (4,))
    with pytest.raises(SpecError, match="layer 0 .conv2d. takes 3 channels"):
        ModelSpec.from_sequential(nn.Sequential(nn.Conv2d(3, 1, 3)), (1, 8, 8))
    with pytest.raises(SpecError, match="larger than its 4x4 input"):
        ModelSpec.from_sequential(nn.Sequential(nn.Conv2d(1, 1, 5)), (1, 4, 4))


def test_it_reads_back_what_it_writes():
    written = valid_json()

    read = ModelSpec.from_json(json.loads(json.dumps(written)))

    assert read == ModelSpec.from_sequential(cnn(), CNN_SHAPE)
    assert read.to_json() == written
    assert read.digest() == ModelSpec.from_sequential(cnn(), CNN_SHAPE).digest()


def test_its_digest_is_stable_and_tells_specs_apart():
    digest = ModelSpec.from_json(valid_json()).digest()
    other_input = ModelSpec.from_sequential(cnn(), (1, 29, 22))
    other_bias = copy.deepcopy(valid_json())
    other_bias["layers"][-1]["bias"] = True
    linear = ModelSpec.from_sequential(nn.Sequential(nn.Linear(4, 2)), (4,))

    assert len(digest) == 64
    assert digest == ModelSpec.from_json(valid_json()).digest()
    assert len({digest, other_input.digest(), ModelSpec.from_json(other_bias).digest(), linear.digest()}) == 4
    # The digest is over canonical JSON: the order of keys in the input does not matter.
    reordered = {key: valid_json()[key] for key in reversed(list(valid_json()))}
    reordered["layers"] = [dict(reversed(list(layer.items()))) for layer in reordered["layers"]]
    assert ModelSpec.from_json(reordered).digest() == digest


def mutated(path: tuple, value=None, *, delete: bool = False) -> dict:
    """The valid spec with the item at `path` (keys and indices) replaced or deleted."""
    document = valid_json()
    target = document
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


HOSTILE = {
    "not an object": [valid_json()],
    "a string": "linear",
    "null": None,
    "unknown top-level key": {**valid_json(), "weights": [1, 2]},
    "no version": mutated(("version",), delete=True),
    "version 2": mutated(("version",), 2),
    "version as a string": mutated(("version",), "1"),
    "version as a boolean": mutated(("version",), True),
    "input shape as a string": mutated(("input_shape",), "1x28x22"),
    "input shape empty": mutated(("input_shape",), []),
    "input shape of four sizes": mutated(("input_shape",), [1, 1, 28, 22]),
    "negative size": mutated(("input_shape", 1), -28),
    "zero size": mutated(("input_shape", 1), 0),
    "boolean size": mutated(("input_shape", 0), True),
    "float size": mutated(("input_shape", 1), 28.0),
    "huge size": mutated(("input_shape", 1), 10**100),
    "layers not a list": mutated(("layers",), {"0": {"type": "relu"}}),
    "no layers": mutated(("layers",), []),
    "too many layers": mutated(("layers",), [{"type": "relu"}] * (spec.MAX_LAYERS + 1)),
    "layer not an object": mutated(("layers", 1), "relu"),
    "unknown layer type": mutated(("layers", 1), {"type": "maxpool2d", "kernel_size": [2, 2], "stride": [2, 2]}),
    "layer type as a list": mutated(("layers", 1), {"type": ["relu"]}),
    "layer type as an object": mutated(("layers", 1), {"type": {"relu": 1}}),
    "layer type missing": mutated(("layers", 1), {}),
    "unknown layer setting": mutated(("layers", 1), {"type": "relu", "inplace": True}),
    "missing layer setting": mutated(("layers", 0, "padding"), delete=True),
    "bias as an integer": mutated(("layers", 0, "bias"), 1),
    "bias as a string": mutated(("layers", 0, "bias"), "true"),
    "boolean channels": mutated(("layers", 0, "out_channels"), True),
    "negative padding": mutated(("layers", 0, "padding"), [-1, 0]),
    "kernel of three sizes": mutated(("layers", 0, "kernel_size"), [3, 2, 1]),
    "kernel as a number": mutated(("layers", 0, "kernel_size"), 3),
    "huge kernel": mutated(("layers", 0, "kernel_size"), [3, 10**30]),
    "zero stride": mutated(("layers", 2, "stride"), [0, 2]),
    "float stride": mutated(("layers", 2, "stride"), [2.0, 2]),
    "huge features": mutated(("layers", 5, "in_features"), 2**64),
    "shapes that do not chain": mutated(("layers", 5, "in_features"), 73),
    "kernel larger than its input": mutated(("input_shape",), [1, 2, 2]),
    "channels that do not chain": mutated(("layers", 3, "in_channels"), 5),
    "linear on an image": mutated(("layers", 4), {"type": "relu"}),
    "conv2d on a vector": {
        "version": 1,
        "input_shape": [16],
        "layers": [{"type": "avgpool2d", "kernel_size": [2, 2], "stride": [2, 2]}],
    },
    "over MAX_WEIGHTS": {
        "version": 1,
        "input_shape": [spec.MAX_DIMENSION],
        "layers": [{"type": "linear", "in_features": spec.MAX_DIMENSION, "out_features": 1000, "bias": False}],
    },
    "over MAX_ACTIVATIONS_PER_INPUT": {
        "version": 1,
        "input_shape": [64, 256, 256],
        "layers": [{"type": "relu"}],
    },
    "an input over MAX_ACTIVATIONS_PER_INPUT, pooled below it": {
        "version": 1,
        "input_shape": [1, spec.MAX_DIMENSION, 60_000],
        "layers": [{"type": "avgpool2d", "kernel_size": [32, 32], "stride": [32, 32]}],
    },
}


@pytest.mark.parametrize("document", HOSTILE.values(), ids=HOSTILE.keys())
def test_it_refuses_hostile_json_with_spec_error_only(document):
    with pytest.raises(SpecError):
        ModelSpec.from_json(document)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize("input_shape", [(-4,), (0, 3), (4.5,), ()])
def test_a_model_split_for_an_impossible_input_shape_is_refused(input_shape):
    with pytest.raises(SpecError):
        ModelSpec.from_sequential(nn.Sequential(nn.Linear(4, 3)), input_shape)
