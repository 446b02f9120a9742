"""The operator allowlist and the walks over a loaded model, answered as the node's 400s.

The rules live in gridarchive/operators.py (no Django in them, so the client applies them to what it
downloads); this module keeps the names the node and its tests use and turns a refusal into
`BadRequest`.
"""

import torch

from gridarchive import operators as rules
from gridarchive.operators import (  # noqa: F401  (the allowlist's names, for the node and its tests)
    _ALIASES_WITHOUT_SAYING,
    _EXPORT_PYTHON,
    ALLOWED_OPERATORS,
    callable_name,
)
from models_app.archives import refusals_as_bad_request


def check_script_module(module: torch.jit.ScriptModule) -> None:
    """A 400 naming the first operator outside the allowlist that a TorchScript module could run, or
    the first write into the module's own state (gridarchive.operators.check_script_module)."""
    with refusals_as_bad_request():
        rules.check_script_module(module)


def check_exported_program(program: torch.export.ExportedProgram) -> None:
    """A 400 naming the first operator outside the allowlist that a torch.export program could run, or
    the first write into its own parameters, buffers or constants (gridarchive.operators)."""
    with refusals_as_bad_request():
        rules.check_exported_program(program)
