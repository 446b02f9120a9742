"""Archives that run code of their own while torch loads them, before any graph could be walked.

Each was measured on this node: the canary file appeared during `torch.jit.load` / `torch.export.load`,
or at the first inference. The node refuses all of them before torch reads the archive.
"""

import base64
import io
import json
import pickle
import struct

import pytest
import torch

from tests.conftest import jit_bytes, plan_bytes
from tests.security.conftest import (
    WritesCanary,
    assert_nothing_stored,
    assert_refused,
    entry_name,
    upload_model,
    zip_entries,
    zip_of,
)

pytestmark = pytest.mark.django_db


class RestoresWithCode(torch.nn.Module):
    """torch.jit.load calls a scripted __setstate__ to restore the module: here it creates a file."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)
        self.opened = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool]:
        return (self.path, self.opened, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool]) -> None:
        self.path = state[0]
        self.training = state[2]
        self.opened = int(torch.from_file(self.path, True, 4, dtype=torch.uint8).sum())


def test_a_jit_archive_with_a_scripted_setstate_is_refused_before_loading(api, canary, data_dir):
    response = upload_model(api, jit_bytes(RestoresWithCode(canary)))

    assert "__setstate__" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def custom_class_pickle(payload: bytes) -> bytes:
    """data.pkl restoring a C++ custom class whose __setstate__ unpickles its text with Python's pickle."""
    state = base64.b64encode(payload)
    return (
        b"\x80\x02"
        + b"c__torch__.torch.classes.aten\nOpaqueObject\n"
        + b")\x81"  # EMPTY_TUPLE, NEWOBJ
        + b"X"
        + struct.pack("<I", len(state))
        + state  # BINUNICODE
        + b"b."  # BUILD, STOP
    )


def test_a_jit_archive_with_a_custom_class_object_is_refused_before_loading(api, mlp_jit, canary, data_dir):
    entries = zip_entries(mlp_jit)
    entries[entry_name(entries, "/data.pkl")] = custom_class_pickle(pickle.dumps(WritesCanary(canary), protocol=2))

    response = upload_model(api, zip_of(entries))

    assert "custom class" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_jit_archive_whose_constants_name_a_custom_class_is_refused(api, mlp_jit, canary, data_dir):
    entries = zip_entries(mlp_jit)
    entries[entry_name(entries, "/constants.pkl")] = custom_class_pickle(pickle.dumps(WritesCanary(canary), protocol=2))

    response = upload_model(api, zip_of(entries))

    assert "custom class" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


class Resizes(torch.nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0] // 2, -1)


@pytest.fixture(scope="module")
def dynamic_plan() -> bytes:
    """A program with symbolic sizes and guards, as torch.export writes them for a dynamic batch."""
    return plan_bytes_dynamic(Resizes(), (torch.rand(6, 3),), ({0: 2 * torch.export.Dim("half")},))


def plan_bytes_dynamic(module, inputs, shapes) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, inputs, dynamic_shapes=shapes), buffer)
    return buffer.getvalue()


def rewrite_program(archive: bytes, change) -> bytes:
    entries = zip_entries(archive)
    name = entry_name(entries, "models/model.json")
    program = json.loads(entries[name])
    program = change(program)
    entries[name] = json.dumps(program).encode()
    return zip_of(entries)


def test_the_dynamic_program_itself_is_accepted(api, dynamic_plan):
    response = upload_model(api, dynamic_plan, allow_remote_inference=True)

    assert response.status_code == 200, response.json()
    inference = api.post("/model/hostile", {"data": torch.rand(8, 3).tolist()}, format="json")
    assert inference.status_code == 200
    assert len(inference.json()["prediction"]) == 4


def test_a_plan_whose_symbolic_size_is_python_is_refused(api, dynamic_plan, canary, data_dir):
    """torch.export.load evaluates each symbolic size with sympy.sympify, which is eval."""
    injected = f"__import__('builtins').open('{canary}', 'w') and "

    def change(program):
        text = json.dumps(program)
        return json.loads(text.replace('"expr_str": "', f'"expr_str": "{injected}', 1))

    response = upload_model(api, rewrite_program(dynamic_plan, change))

    assert "shape code" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_plan_whose_guard_is_python_is_refused(api, dynamic_plan, canary, data_dir):
    """ExportedProgram.module() compiles guards_code with exec; it runs at every inference."""

    def change(program):
        program["guards_code"].append(f"open('{canary}', 'w') is not None")
        return program

    response = upload_model(api, rewrite_program(dynamic_plan, change), allow_remote_inference=True)

    assert "shape code" in assert_refused(response)
    api.post("/model/hostile", {"data": torch.rand(8, 3).tolist()}, format="json")
    assert not canary.exists()
    assert_nothing_stored(data_dir)


class TakesText(torch.nn.Module):
    def forward(self, x, label: str):
        return x + 1


def test_a_plan_with_a_text_input_is_refused(api, canary, data_dir):
    """A constant input's value is pasted, unescaped, into the guard code module() compiles."""
    archive = plan_bytes(TakesText(), (torch.rand(3), "label"))
    quoted = json.dumps(f"x' or open('{canary}', 'w') or '")

    def change(program):
        return json.loads(json.dumps(program).replace('"label"', quoted))

    response = upload_model(api, rewrite_program(archive, change), allow_remote_inference=True)

    assert "not tensors" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    "expression",
    [
        "Symbol('s0').__class__",
        "Integer(2)**Integer(10**12)",
        "Pow(Pow(Integer(10), Integer(60)), Integer(60))",
        "'s' * Integer(10**15)",
        "(lambda: 1)()",
        "Symbol('s0', positive=True)[0]",
        "Float('1.5', precision=10**9)",
    ],
)
def test_symbolic_sizes_allow_only_bounded_arithmetic(api, dynamic_plan, data_dir, expression):
    def change(program):
        text = json.dumps(program)
        first = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', first)
        return json.loads(text[:first] + expression.replace('"', '\\"') + text[end:])

    response = upload_model(api, rewrite_program(dynamic_plan, change))

    assert "shape code" in assert_refused(response)
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    "guard",
    [
        "L['x'].__class__ == 1",
        "L['x'].size()[0] ** L['x'].size()[0] == 1",
        "'a' * 10**18 == 'a'",
        "eval('1') == 1",
        "L['x'].size()[0] == max(1, key=print)",
        'L["x\'"].size()[0] == 1',
    ],
)
def test_guards_allow_only_arithmetic_on_sizes(api, dynamic_plan, data_dir, guard):
    def change(program):
        program["guards_code"].append(guard)
        return program

    response = upload_model(api, rewrite_program(dynamic_plan, change))

    assert "shape code" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_plan_counting_to_a_huge_unbacked_symbol_is_refused(api, dynamic_plan, data_dir):
    """The deserializer counts up to the number in an unbacked symbol's name, one at a time."""

    def change(program):
        program["range_constraints"]["u99999999999"] = {"min_val": 0, "max_val": None}
        return program

    response = upload_model(api, rewrite_program(dynamic_plan, change))

    assert "shape code" in assert_refused(response)
    assert_nothing_stored(data_dir)
