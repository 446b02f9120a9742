"""A hosted model must not write into its own state: every caller would get what the previous one left.

Measured on this node before the check existed: a model with a buffer `prev` whose forward does
`old = self.prev.clone(); self.prev.copy_(x); return old` passed the operator allowlist (aten::copy_ is
allowed, for models' own tensors), and every inference answered with the previous caller's input; its
torch.export program did the same, since torch 2.13 keeps `aten.copy_.default(b_prev, x)` in the graph
and leaves `graph_signature.buffers_to_mutate` empty.
"""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from torch import nn

from gridnode.errors import BadRequest
from models_app import archives, operators
from models_app.models import HostedModel
from tests.conftest import jit_bytes, plan_bytes
from tests.security.conftest import (
    assert_nothing_stored,
    assert_refused,
    entry_name,
    stored_state,
    upload_model,
    zip_entries,
    zip_of,
)
from tests.security.hostile import Stash

pytestmark = pytest.mark.django_db

CALLER_A = [1.0, 2.0, 3.0, 4.0]
CALLER_B = [5.0, 6.0, 7.0, 8.0]


def writes_state(write: str) -> str:
    """The refusal for a model that writes into its own state, as `<operator> on <state>`."""
    return f"The model writes into its own state, which would carry one caller's data to the next: {write}"


# The reported model: answers each caller with the previous caller's input.
StashesItsInput = Stash


class StashesInASubmodule(nn.Module):
    """The same write, in a submodule's forward (inlined into the parent's graph)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Identity(), StashesItsInput())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class StashesInABranch(StashesItsInput):
    """The same write, inside the block of an `if`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        if bool(x.sum() > -1e9):
            self.prev.copy_(x)
        return old


class StashesInALoop(StashesItsInput):
    """The same write, element by element, inside a loop (`self.prev[i] = x[i]` is a copy_ into a view)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        for index in range(4):
            self.prev[index] = x[index]
        return old


class WritesThroughASelectedView(StashesItsInput):
    """A write into a view of the buffer is a write into the buffer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        self.prev[0].copy_(x[0])
        return old


class AddsThroughAFlatView(StashesItsInput):
    """Accumulates every caller's input: a running sum of everything sent so far."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        self.prev.view(-1).add_(x)
        return old


class AddsToAParameter(nn.Module):
    """In-place arithmetic on a parameter: a running sum of every caller's input."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.w.clone()
        self.w.add_(x.sum())
        return old + x * 0


class ZeroesABuffer(nn.Module):
    """Tells a caller whether anyone came before."""

    def __init__(self):
        super().__init__()
        self.register_buffer("prev", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        self.prev.zero_()
        return old + x * 0


class WritesThroughDropout(StashesItsInput):
    """F.dropout in eval mode returns its input itself, though its schema promises a new tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        F.dropout(self.prev, 0.5, False).copy_(x)
        return old


class UpdatesRunningStatistics(nn.Module):
    """batch_norm in training mode overwrites its running mean (momentum 1.0) with the batch's mean:
    a write its schema does not declare."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.mean.clone()
        F.batch_norm(torch.stack([x, x]), self.mean, self.var, training=True, momentum=1.0)
        return old


class AppendsToAListAttribute(nn.Module):
    """A list attribute is state too: each caller's input is kept for the next one."""

    def __init__(self):
        super().__init__()
        self.history: list[torch.Tensor] = [torch.zeros(4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.history[-1]
        self.history.append(x.clone())
        return old


@torch.jit.script
class Flags:
    """A TorchScript class with a `training` of its own, which no `eval()` turns off."""

    def __init__(self):
        self.training = True


class BranchesOnAnotherTrainingFlag(StashesItsInput):
    """A write behind a `training` that is not a module's: the branch runs, so it is refused."""

    def __init__(self):
        super().__init__()
        self.flags = Flags()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        if self.flags.training:
            self.prev.copy_(x)
        return old


class ReturnsItsBuffer(StashesItsInput):
    """forward hands out the buffer itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prev


def stashes_in_a_forward_hook() -> nn.Module:
    """forward returns the buffer itself; a forward hook writes the caller's input into that output."""
    module = ReturnsItsBuffer()

    def hook(self, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
        old = output.clone()
        output.copy_(inputs[0])
        return old

    module.register_forward_hook(hook)
    return module


def test_a_model_that_writes_its_buffer_leaks_inputs_when_nothing_checks_it():
    """The threat, measured without the node: the second caller receives the first caller's input."""
    for module in (
        torch.jit.load(io.BytesIO(jit_bytes(StashesItsInput()))),
        torch.export.load(io.BytesIO(plan_bytes(StashesItsInput(), (torch.rand(4),)))).module(),
    ):
        module(torch.tensor(CALLER_A))

        assert module(torch.tensor(CALLER_B)).tolist() == CALLER_A


@pytest.mark.parametrize(
    ("build", "write"),
    [
        pytest.param(StashesItsInput, "aten::copy_ on self.prev", id="stash"),
        pytest.param(StashesInASubmodule, "aten::copy_ on self.inner.1.prev", id="submodule"),
        pytest.param(StashesInABranch, "aten::copy_ on self.prev", id="if-block"),
        pytest.param(StashesInALoop, "aten::copy_ on self.prev", id="loop"),
        pytest.param(WritesThroughASelectedView, "aten::copy_ on self.prev", id="selected-view"),
        pytest.param(AddsThroughAFlatView, "aten::add_ on self.prev", id="flat-view"),
        pytest.param(AddsToAParameter, "aten::add_ on self.w", id="parameter"),
        pytest.param(ZeroesABuffer, "aten::zero_ on self.prev", id="zero"),
        pytest.param(WritesThroughDropout, "aten::copy_ on self.prev", id="dropout-alias"),
        pytest.param(UpdatesRunningStatistics, "aten::batch_norm on self.mean", id="running-statistics"),
        pytest.param(AppendsToAListAttribute, "aten::append on self.history", id="list-attribute"),
        pytest.param(BranchesOnAnotherTrainingFlag, "aten::copy_ on self.prev", id="class-training-flag"),
        pytest.param(stashes_in_a_forward_hook, "aten::copy_ on self.prev", id="forward-hook"),
    ],
)
def test_it_refuses_a_jit_model_that_writes_its_state(api, data_dir, build, write):
    """Refused at upload with the operator and the attribute; no row, no file, nothing staged."""
    response = upload_model(api, jit_bytes(build().eval()), allow_remote_inference=True)

    assert assert_refused(response) == writes_state(write)
    assert_nothing_stored(data_dir)


class StashesThroughAnUnpackedChunk(StashesItsInput):
    """Views returned as a list (chunk) and unpacked."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        head, tail = self.prev.chunk(2)
        head.copy_(x[:2])
        tail.copy_(x[2:])
        return old


class StashesThroughAFreshList(StashesItsInput):
    """The buffer put into a list the model made, then written through the list."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        tensors: list[torch.Tensor] = []
        tensors.append(self.prev)
        tensors[0].copy_(x)
        return old


class StoresInADictAttribute(nn.Module):
    """A dict attribute whose item is replaced by each caller's input."""

    def __init__(self):
        super().__init__()
        self.last: dict[str, torch.Tensor] = {"x": torch.zeros(4)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.last["x"]
        self.last["x"] = x.clone()
        return old


class WritesIntoAnOutArgument(StashesItsInput):
    """`out=` names the tensor an operator writes its result into."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        torch.add(x, 0, out=self.prev)
        return old


class WritesThroughEinsum(StashesItsInput):
    """einsum("i->i", t) returns t itself, though its schema promises a new tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = self.prev.clone()
        same = torch.einsum("i->i", self.prev)
        same.copy_(x)
        return old + same * 0


@pytest.mark.parametrize(
    ("module", "write"),
    [
        pytest.param(StashesThroughAnUnpackedChunk(), "aten::copy_ on self.prev", id="chunk"),
        pytest.param(StashesThroughAFreshList(), "aten::copy_ on self.prev", id="fresh-list"),
        pytest.param(StoresInADictAttribute(), "aten::_set_item on self.last", id="dict-attribute"),
        pytest.param(WritesIntoAnOutArgument(), "aten::add on self.prev", id="out-argument"),
        pytest.param(WritesThroughEinsum(), "aten::copy_ on self.prev", id="einsum-alias"),
    ],
)
def test_the_state_is_traced_through_containers_and_aliases(module, write):
    """The same refusal, for more ways to reach a buffer, checked on the loaded module directly."""
    loaded = torch.jit.load(io.BytesIO(jit_bytes(module)))

    with pytest.raises(BadRequest) as refused:
        operators.check_script_module(loaded)
    assert refused.value.message == writes_state(write)


def stash_in_a_branch_of_cond() -> bytes:
    """A torch.export archive whose torch.cond branch writes the caller's input into a buffer.

    torch.export refuses to trace a branch that mutates, so the branch's `b.mul(1)` is rewritten in the
    archive's JSON into `aten.copy_(b, x)` (an allowed operator)."""

    class Branches(StashesItsInput):
        def forward(self, x):
            return torch.cond(x.sum() > -1e9, lambda x, b: x + b.mul(1), lambda x, b: x - b, (x, self.prev))

    entries = zip_entries(plan_bytes(Branches(), (torch.rand(4),)))
    name = entry_name(entries, "models/model.json")
    program = json.loads(entries[name])
    branch = program["graph_module"]["graph"]["nodes"][2]["inputs"][1]["arg"]["as_graph"]["graph"]
    node = next(node for node in branch["nodes"] if node["target"] == "torch.ops.aten.mul.Tensor")
    node["target"] = "torch.ops.aten.copy_.default"
    node["inputs"] = [
        {"name": "self", "arg": {"as_tensor": {"name": "b_prev"}}, "kind": 1},
        {"name": "src", "arg": {"as_tensor": {"name": "x"}}, "kind": 1},
    ]
    entries[name] = json.dumps(program).encode()
    return zip_of(entries)


def functionalized_stash() -> bytes:
    """The same model after run_decompositions(): the write becomes an output the signature marks as a
    buffer mutation (buffers_to_mutate is not empty), which the unlifted module copies back after each call."""
    program = torch.export.export(StashesItsInput(), (torch.rand(4),)).run_decompositions()
    assert program.graph_signature.buffers_to_mutate
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def exported(module: nn.Module) -> bytes:
    """A torch.export archive of an eval-mode module taking four numbers."""
    return plan_bytes(module.eval(), (torch.rand(4),))


@pytest.mark.parametrize(
    ("build", "write"),
    [
        pytest.param(lambda: exported(StashesItsInput()), "aten::copy_ on buffer prev", id="stash"),
        pytest.param(lambda: exported(StashesInASubmodule()), "aten::copy_ on buffer inner.1.prev", id="submodule"),
        pytest.param(lambda: exported(StashesInALoop()), "aten::copy_ on buffer prev", id="loop"),
        pytest.param(lambda: exported(WritesThroughASelectedView()), "aten::copy_ on buffer prev", id="selected-view"),
        pytest.param(lambda: exported(AddsThroughAFlatView()), "aten::add_ on buffer prev", id="flat-view"),
        pytest.param(lambda: exported(AddsToAParameter()), "aten::add_ on parameter w", id="parameter"),
        pytest.param(lambda: exported(ZeroesABuffer()), "aten::zero_ on buffer prev", id="zero"),
        pytest.param(
            lambda: exported(UpdatesRunningStatistics()), "aten::batch_norm on buffer mean", id="running-statistics"
        ),
        pytest.param(stash_in_a_branch_of_cond, "aten::copy_ on buffer prev", id="cond-branch"),
        pytest.param(functionalized_stash, "an output copied back into buffer prev", id="buffers-to-mutate"),
    ],
)
def test_it_refuses_a_plan_that_writes_its_state(api, data_dir, build, write):
    """Refused at upload with the operator and the buffer or parameter; nothing stored."""
    response = upload_model(api, build(), allow_remote_inference=True)

    assert assert_refused(response) == writes_state(write)
    assert_nothing_stored(data_dir)


def test_the_rewritten_cond_branch_leaks_when_nothing_checks_it():
    """The cond-branch archive above is a real threat: torch loads it and the branch writes the buffer."""
    module = torch.export.load(io.BytesIO(stash_in_a_branch_of_cond())).module()
    module(torch.tensor(CALLER_A))

    assert module.prev.tolist() == CALLER_A


def test_a_refused_upload_leaves_the_hosted_models_as_they_were(api, serve, mlp_jit, data_dir):
    """With a model already hosted: the refusal changes no row and no file."""
    serve("mlp", mlp_jit, allow_remote_inference=True)
    before = stored_state(data_dir)

    response = upload_model(api, jit_bytes(StashesItsInput()), allow_remote_inference=True)

    assert assert_refused(response) == writes_state("aten::copy_ on self.prev")
    assert stored_state(data_dir) == before
    assert HostedModel.objects.count() == 1


def test_a_model_cannot_turn_its_training_flag_back_on(api, data_dir):
    """The training-mode branches of BatchNorm are dead only because nothing can set `training` again."""

    class TurnsTrainingOn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.training = True
            return x

    response = upload_model(api, jit_bytes(TurnsTrainingOn()))

    assert assert_refused(response) == "The model uses an operator this node does not run: prim::SetAttr"
    assert_nothing_stored(data_dir)


# Models that keep working.


def batch_norm_model() -> nn.Module:
    """Linear, BatchNorm1d, in-place ReLU, Dropout, Linear, in eval mode, with non-trivial running statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(8, 2))
    with torch.no_grad():  # running statistics that are not the identity, so using them shows
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model.eval()


BATCH = [CALLER_A, CALLER_B]


def assert_close(answer: list, expected: list) -> None:
    """The node's answer is what the model computes here (JSON carries float32 values as decimals)."""
    torch.testing.assert_close(torch.tensor(answer), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def expected_from(model: nn.Module) -> list:
    """What the model answers for BATCH in eval mode, computed here."""
    with torch.no_grad():
        return model.eval()(torch.tensor(BATCH)).tolist()


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(lambda: jit_bytes(batch_norm_model()), id="jit"),
        # Scripted in training mode: the node still runs it in eval mode (archives.py calls eval()).
        pytest.param(lambda: jit_bytes(batch_norm_model().train()), id="jit-scripted-in-training-mode"),
        pytest.param(lambda: plan_bytes(batch_norm_model(), (torch.rand(2, 4),)), id="plan"),
    ],
)
def test_a_batch_norm_model_in_eval_mode_answers_the_same_every_time(api, archive):
    """Accepted, and its running statistics stay as they were: two calls, one answer, the one computed here."""
    upload_model(api, archive(), model_id="bn", allow_remote_inference=True)

    first = api.post("/model/bn", {"data": BATCH}, format="json")
    second = api.post("/model/bn", {"data": BATCH}, format="json")

    assert first.status_code == 200, first.content
    assert second.json()["prediction"] == first.json()["prediction"]
    assert_close(first.json()["prediction"], expected_from(batch_norm_model()))


def test_an_exported_batch_norm_in_eval_mode_only_reads_its_statistics():
    """torch.export in eval mode calls batch_norm with training=False (its decomposition, the
    `_native_batch_norm_legit_no_training` the brief expected), and marks no buffer as mutated."""
    program = torch.export.export(batch_norm_model(), (torch.rand(2, 4),))
    decomposed = program.run_decompositions()

    (batch_norm,) = [node for node in program.graph.nodes if node.target is torch.ops.aten.batch_norm.default]
    assert batch_norm.args[5] is False
    assert any(
        node.target is torch.ops.aten._native_batch_norm_legit_no_training.default for node in decomposed.graph.nodes
    )
    for checked in (program, decomposed):
        assert not checked.graph_signature.buffers_to_mutate
        operators.check_exported_program(checked)


class UsesItsOwnIntermediates(nn.Module):
    """In-place operators on tensors the model made itself, and on the caller's own input."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.add_(1)
        filled = torch.zeros(4).fill_(2)
        hidden = torch.relu_(self.linear(x))
        hidden.mul_(2)
        weights: list[torch.Tensor] = [self.linear.weight]
        total = torch.stack(weights).sum(0)
        x.mul_(1)
        return y + filled + hidden + total.sum()


@pytest.mark.parametrize("kind", ["jit", "plan"])
def test_a_model_writing_into_its_own_intermediates_answers(api, kind):
    """In-place operators on what the model made (and on the caller's input) stay allowed."""
    model = UsesItsOwnIntermediates().eval()
    archive = jit_bytes(model) if kind == "jit" else plan_bytes(model, (torch.rand(2, 4),))
    upload_model(api, archive, model_id="fresh", allow_remote_inference=True)

    first = api.post("/model/fresh", {"data": BATCH}, format="json")
    second = api.post("/model/fresh", {"data": BATCH}, format="json")

    assert first.status_code == 200, first.content
    assert first.json()["prediction"] == second.json()["prediction"]
    assert_close(first.json()["prediction"], expected_from(model))


class ResidualBlock(nn.Module):
    """A ResNet basic block: convolutions, batch norm, in-place ReLU and `out += identity`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


def small_resnet() -> nn.Module:
    """A ResNet-like CNN: a stem and two residual blocks with batch norm."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        ResidualBlock(4),
        ResidualBlock(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()


class LastStep(nn.Module):
    """A recurrent layer's output sequence, as models use it."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]


COMMON_MODELS = {
    "resnet": (small_resnet, (torch.rand(1, 3, 8, 8),)),
    "lstm": (lambda: LastStep(nn.LSTM(4, 5, batch_first=True)), (torch.rand(2, 3, 4),)),
    "gru": (lambda: LastStep(nn.GRU(4, 5, batch_first=True)), (torch.rand(2, 3, 4),)),
    "transformer-encoder-layer": (
        lambda: nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
        (torch.rand(2, 3, 8),),
    ),
    "instance-norm-with-running-statistics": (
        lambda: nn.InstanceNorm1d(4, track_running_stats=True),
        (torch.rand(2, 4, 5),),
    ),
}


@pytest.mark.parametrize("kind", ["jit", "plan"])
@pytest.mark.parametrize("name", COMMON_MODELS)
def test_common_models_with_buffers_and_in_place_operators_still_load(api, name, kind):
    """Layers with buffers, running statistics and in-place operators are not refused."""
    build, inputs = COMMON_MODELS[name]
    model = build().eval()
    archive = jit_bytes(model) if kind == "jit" else plan_bytes(model, inputs)

    response = upload_model(api, archive, model_id="common", allow_remote_inference=True)

    assert response.status_code == 200, response.json()


def test_a_resnet_answers_what_it_computes_here(api):
    """The residual blocks' `out += x` and in-place ReLUs write only the model's own intermediates."""
    upload_model(api, jit_bytes(small_resnet()), model_id="resnet", allow_remote_inference=True)
    image = torch.rand(1, 3, 8, 8)

    response = api.post("/model/resnet", {"data": image.tolist()}, format="json")

    assert response.status_code == 200, response.content
    with torch.no_grad():
        assert_close(response.json()["prediction"], small_resnet()(image).tolist())


# A model stored before this check (or changed in storage) is checked when it is loaded.


def store_directly(model_id: str, archive: bytes, kind: str) -> None:
    """Store an archive and its row without the upload's checks."""
    name = default_storage.save(f"models/{model_id}.{'pt' if kind == 'jit' else 'pt2'}", ContentFile(archive))
    HostedModel.objects.create(
        model_id=model_id, kind=kind, archive=name, size=len(archive), sha256="0" * 64, allow_remote_inference=True
    )


@pytest.mark.parametrize(
    ("kind", "write"), [("jit", "aten::copy_ on self.prev"), ("plan", "aten::copy_ on buffer prev")]
)
def test_a_stored_model_that_writes_its_state_is_refused_at_inference(api, kind, write):
    """An archive stored without the upload's checks is refused when loaded to answer: a 400 naming the
    write, every time, through both APIs; the row stays (refusing to run it deletes nothing)."""
    archive = jit_bytes(StashesItsInput()) if kind == "jit" else plan_bytes(StashesItsInput(), (torch.rand(4),))
    store_directly("stored", archive, kind)

    first = api.post("/model/stored", {"data": CALLER_A}, format="json")
    second = api.post("/model/stored", {"data": CALLER_B}, format="json")
    v2 = api.post(
        "/v2/models/stored/infer",
        {"inputs": [{"name": "input__0", "shape": [4], "datatype": "FP32", "data": CALLER_B}]},
        format="json",
    )

    for response in (first, second, v2):
        assert assert_refused(response) == writes_state(write)
    assert first.json()["success"] is False
    assert "prediction" not in second.json()
    assert HostedModel.objects.filter(model_id="stored").exists()  # refused, not deleted


# The measurements behind the tables in models_app/operators.py.


def shares_memory(output, tensor: torch.Tensor) -> bool:
    """Whether a result uses the tensor's own memory (is it, or a view of it)."""
    return output.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda t: torch.dropout(t, 0.5, False), id="aten::dropout"),
        pytest.param(lambda t: torch.feature_dropout(t, 0.5, False), id="aten::feature_dropout"),
        pytest.param(lambda t: torch.alpha_dropout(t, 0.5, False), id="aten::alpha_dropout"),
        pytest.param(lambda t: torch.feature_alpha_dropout(t, 0.5, False), id="aten::feature_alpha_dropout"),
        pytest.param(lambda t: t.type_as(t), id="aten::type_as"),
        pytest.param(lambda t: torch.einsum("ijk->ijk", t), id="aten::einsum"),
    ],
)
def test_these_operators_return_their_input_though_their_schema_says_otherwise(request, call):
    """Why _ALIASES_WITHOUT_SAYING exists: each listed operator hands back its input, its schema says a new tensor."""
    name = request.node.callspec.id
    tensor = torch.rand(2, 3, 4)

    assert shares_memory(call(tensor), tensor)
    assert name in operators._ALIASES_WITHOUT_SAYING
    assert all(returned.alias_info is None for returned in getattr(torch.ops.aten, name[6:]).default._schema.returns)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda t: F.linear(t, torch.eye(4)), id="linear"),
        pytest.param(lambda t: torch.matmul(t, torch.eye(4)), id="matmul"),
        pytest.param(lambda t: F.pad(t, (0, 0)), id="pad"),
        pytest.param(lambda t: t.tile((1,)), id="tile"),
        pytest.param(lambda t: F.layer_norm(t, (4,)), id="layer_norm"),
        pytest.param(lambda t: F.batch_norm(t, torch.zeros(3), torch.ones(3)), id="batch_norm"),
        pytest.param(lambda t: F.adaptive_avg_pool1d(t, 4), id="adaptive_avg_pool1d"),
        pytest.param(lambda t: F.max_pool1d(t, 1), id="max_pool1d"),
        pytest.param(lambda t: torch.channel_shuffle(t.unsqueeze(-1), 1), id="channel_shuffle"),
        pytest.param(lambda t: t.nan_to_num(), id="nan_to_num"),
        pytest.param(lambda t: F.relu6(t), id="relu6"),
        pytest.param(lambda t: t.softmax(-1), id="softmax"),
    ],
)
def test_the_other_composite_operators_return_new_tensors(call):
    """Identity-like arguments are where a composite operator would hand back its input: they do not."""
    tensor = torch.rand(2, 3, 4)

    assert not shares_memory(call(tensor), tensor)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda x, m, v, flag: torch.batch_norm(x, None, None, m, v, flag, 1.0, 1e-5, False), id="batch"),
        pytest.param(lambda x, m, v, flag: torch.native_batch_norm(x, None, None, m, v, flag, 1.0, 1e-5), id="native"),
        pytest.param(
            lambda x, m, v, flag: torch.instance_norm(x, None, None, m, v, flag, 1.0, 1e-5, False), id="instance"
        ),
    ],
)
def test_the_norms_update_their_running_statistics_only_when_flagged(call):
    """Why _WRITES_WHEN_FLAGGED exists: the running statistics change only when the flag is true."""
    x = torch.rand(2, 3, 4)
    for flag in (False, True):
        mean, var = torch.zeros(3), torch.ones(3)

        call(x, mean, var, flag)

        assert bool(mean.abs().sum() > 0) is flag


def test_loading_turns_every_training_flag_off():
    """What makes `if self.training:` branches dead: archives.py puts the whole module in eval mode."""
    loaded = archives.load_archive(io.BytesIO(jit_bytes(small_resnet().train())), "jit", max_unpacked_bytes=10**8)

    assert not any(module.training for module in loaded.module.modules())
