"""The operator allowlist: every common layer passes it, and no allowed operator reaches a file or storage."""

import io

import pytest
import torch

from models_app import operators
from models_app.models import HostedModel
from tests.security import zoo
from tests.security.conftest import upload_model

pytestmark = pytest.mark.django_db

REGISTERED = {schema.name: [] for schema in torch._C._jit_get_all_schemas()}
for _schema in torch._C._jit_get_all_schemas():
    REGISTERED[_schema.name].append(_schema)

# TorchScript IR node kinds that are no registered operator (the interpreter runs them itself).
IR_NODE_KINDS = {
    "prim::Constant",
    "prim::GetAttr",
    "prim::If",
    "prim::Loop",
    "prim::ListConstruct",
    "prim::ListUnpack",
    "prim::TupleConstruct",
    "prim::DictConstruct",
    "prim::unchecked_unwrap_optional",
}


def scripted(module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module.eval()), buffer)
    return buffer.getvalue()


def exported(module, example_inputs, dynamic_shapes) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module.eval(), example_inputs, dynamic_shapes=dynamic_shapes), buffer)
    return buffer.getvalue()


def ids(models):
    return [pytest.param(module, inputs, shapes, id=name) for name, module, inputs, shapes in models]


@pytest.mark.parametrize(("module", "inputs", "shapes"), ids([*zoo.zoo(), *zoo.script_only()]))
def test_it_accepts_every_common_layer_as_torchscript(api, module, inputs, shapes):
    response = upload_model(api, scripted(module), model_id="layer", allow_remote_inference=True)

    assert response.status_code == 200, response.json()
    assert HostedModel.objects.filter(model_id="layer", kind="jit").exists()


@pytest.mark.parametrize(("module", "inputs", "shapes"), ids([*zoo.zoo(), *zoo.export_only()]))
def test_it_accepts_every_common_layer_as_torch_export(api, module, inputs, shapes):
    response = upload_model(api, exported(module, inputs, shapes), model_id="layer", allow_remote_inference=True)

    assert response.status_code == 200, response.json()
    assert HostedModel.objects.filter(model_id="layer", kind="plan").exists()


def test_an_accepted_layer_answers_inference(api):
    module = dict((name, module) for name, module, _, _ in zoo.zoo())["conv2d"]
    upload_model(api, scripted(module), model_id="conv", allow_remote_inference=True)

    response = api.post("/model/conv", {"data": torch.rand(1, 3, 16, 16).tolist()}, format="json")

    assert response.status_code == 200
    assert len(response.json()["prediction"][0]) == 2


def test_every_allowed_name_is_a_real_operator():
    """A typo in the list would allow nothing, or something else: every name resolves."""
    for name in operators.ALLOWED_OPERATORS:
        namespace, _, op = name.partition("::")
        if namespace in ("aten", "prim"):
            assert name in REGISTERED or name in IR_NODE_KINDS, name
        elif namespace == "higher_order":
            assert isinstance(getattr(torch.ops.higher_order, op), torch._ops.HigherOrderOperator), name
        else:
            assert operators.callable_name(operators._EXPORT_PYTHON[name]) == name


def test_no_allowed_operator_takes_a_storage_or_a_file_name():
    for name in operators.ALLOWED_OPERATORS:
        for schema in REGISTERED.get(name, []):
            for argument in schema.arguments:
                assert "Storage" not in str(argument.type), schema
                is_text = str(argument.type) in ("str", "Optional[str]")
                assert not (is_text and argument.name in ("filename", "path", "file", "f")), schema


@pytest.mark.parametrize(
    "name",
    [
        "aten::from_file",
        "aten::save",
        "aten::set_",
        "aten::empty",
        "aten::empty_like",
        "aten::new_empty",
        "aten::empty_strided",
        "aten::resize_",
        "prim::Print",
        "aten::_print",
        "prim::fork",
        "aten::wait",
        "prim::rpc_async",
        "prim::PythonOp",
        "prim::CallMethod",
        "prim::CallFunction",
        "prim::id",
        "aten::manual_seed",
        "aten::set_grad_enabled",
        "debugprims::load_tensor",
        "quantized::linear",
        "_operator.pow",
        "builtins.open",
        # Nodes that hold code of their own: the walk opens only prim::If and prim::Loop.
        "prim::Closure",
        "prim::With",
        "prim::Enter",
        "prim::DifferentiableGraph",
        "prim::FusionGroup",
        "prim::TensorExprGroup",
        "prim::StaticSubgraph",
    ],
)
def test_it_refuses_every_family_that_reaches_outside_tensors(name):
    assert name not in operators.ALLOWED_OPERATORS
