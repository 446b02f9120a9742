"""Model archives: recognise the kind, check an untrusted archive before torch sees it, and load it.

The node checks every archive a client uploads; the client checks every archive a node answers
(`GridNodeClient.download_model`): the same rules, here, for both. Loading a torch archive runs code
of the archive unless these checks pass first.

Every archive is first sized up from its zip directory (gridarchive.ziplimits: no zip bombs, no entry
counts or sizes past the caller's limits). Then, by kind:

- TorchScript (`torch.jit.save`, kind `jit`): torch.jit.load runs code of the archive while it loads:
  a class's scripted `__setstate__` (measured: `torch.from_file(path, True, n)` in one creates the file
  during the load), and the C++ `__setstate__` of "custom class" objects in its pickles (measured:
  `__torch__.torch.classes.aten.OpaqueObject` in data.pkl is restored with Python's unrestricted
  `pickle.loads`). So before loading, the code must not define `__setstate__` and every pickle may
  name only the globals TorchScript's own pickler writes (its classes, tensors, containers).
- torch.export (`torch.export.save`, kind `plan`): `torch.export.load` unpickles some entries with
  `weights_only=False` or plain `pickle.loads`, evaluates every symbolic size in models/model.json with
  `sympy.sympify` (which is `eval`), and `ExportedProgram.module()` compiles the archive's
  `guards_code` into the model with `exec`. So every entry is checked against what
  `torch.export.save` writes, the sample inputs must pass the safe loader, and the program's JSON is
  read first: its symbolic sizes and guards must be plain arithmetic on sizes, its inputs tensors,
  and every node it names an allowed operator.

After loading, and before anything runs, every operator the model could call is checked against the
allowlist in gridarchive/operators.py. A refusal is `gridarchive.errors.ArchiveRefused`; the node
answers it as a 400 (models_app/archives.py), the client raises it as `gridclient.ModelRefused`.

Nothing here imports Django: the client installs without it.
"""

import ast
import io
import json
import pickletools
import re
import warnings
import zipfile
from typing import IO, cast

import torch

from gridarchive import operators
from gridarchive.errors import ArchiveRefused
from gridarchive.ziplimits import check_zip, is_zip

JIT = "jit"
PLAN = "plan"

# What torch.export.save writes (paths below the archive's root folder), and nothing else.
_PLAN_FIXED_ENTRIES = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "data/sample_inputs/model.pt",
}
_PLAN_WEIGHT_RE = re.compile(r"data/weights/(weight_\d+)")
_PLAN_CONSTANT_RE = re.compile(r"data/constants/(tensor_\d+)")


def last_line(exc: Exception) -> str:
    # TorchScript errors carry a whole interpreter trace; its last line states the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _root_and_names(archive: zipfile.ZipFile) -> tuple[str, set[str]]:
    """The archive's single root folder and its entry names relative to it."""
    names = archive.namelist()
    if not names:
        raise ArchiveRefused("The model archive is empty.")
    root = names[0].split("/", 1)[0]
    relative = set()
    for name in names:
        head, _, rest = name.partition("/")
        if head != root or not rest:
            raise ArchiveRefused("The model archive must hold one root folder, as torch writes it.")
        relative.add(rest)
    return root, relative


def detect_kind(source: IO[bytes], *, max_unpacked_bytes: int) -> str:
    """`jit` or `plan` from the archive's layout; `ArchiveRefused` for anything else, zip bombs included."""
    if not is_zip(source):
        raise ArchiveRefused("The model is not a TorchScript or torch.export archive (not a zip file).")
    check_zip(source, what="The model archive", max_unpacked_bytes=max_unpacked_bytes)
    try:
        with zipfile.ZipFile(source) as archive:
            _, names = _root_and_names(archive)
    except zipfile.BadZipFile:
        raise ArchiveRefused("The model is not a TorchScript or torch.export archive (not a zip file).") from None
    finally:
        source.seek(0)
    if "archive_format" in names and "models/model.json" in names:
        return PLAN
    if {"data.pkl", "constants.pkl"} <= names and any(name.startswith("code/") for name in names):
        return JIT
    raise ArchiveRefused("The zip file is neither a TorchScript archive nor a torch.export archive.")


def check_plan_archive(source: IO[bytes], *, max_unpacked_bytes: int) -> None:
    """Refuse a torch.export archive unless torch.export.load would run nothing of its own from it."""
    try:
        with zipfile.ZipFile(source) as archive:
            root, names = _root_and_names(archive)

            def read(name: str) -> bytes:
                return archive.read(f"{root}/{name}")

            if read("archive_format").strip() != b"pt2":
                raise ArchiveRefused("The torch.export archive has an unknown format.")
            payloads = set()
            for config_name, pattern in (
                ("data/weights/model_weights_config.json", _PLAN_WEIGHT_RE),
                ("data/constants/model_constants_config.json", _PLAN_CONSTANT_RE),
            ):
                payloads |= _check_payload_config(read(config_name), pattern, config_name)
            unexpected = sorted(names - _PLAN_FIXED_ENTRIES - payloads)
            if unexpected:
                raise ArchiveRefused(
                    f"The torch.export archive holds an entry this node does not load: {unexpected[0]}"
                )
            missing = sorted((_PLAN_FIXED_ENTRIES | payloads) - names)
            if missing:
                raise ArchiveRefused(f"The torch.export archive is missing {missing[0]}.")
            _check_sample_inputs(read("data/sample_inputs/model.pt"), limit=max_unpacked_bytes)
            _check_program_json(read("models/model.json"))
    except zipfile.BadZipFile:
        raise ArchiveRefused("The model is not a readable zip archive.") from None
    except KeyError as exc:
        raise ArchiveRefused(f"The torch.export archive is missing {exc.args[0]}.") from None
    finally:
        source.seek(0)


def _check_sample_inputs(raw: bytes, *, limit: int) -> None:
    """The sample inputs (a torch.save zip inside the archive) unpack within bounds and hold only tensors."""
    sample = io.BytesIO(raw)
    if is_zip(sample):
        check_zip(sample, what="The torch.export archive's sample inputs", max_unpacked_bytes=limit)
    try:
        torch.load(sample, weights_only=True)
    except Exception:
        raise ArchiveRefused("The torch.export archive's sample inputs are not plain tensors.") from None


def _check_program_json(raw: bytes) -> None:
    """Refuse a serialized program whose JSON torch.export would evaluate into code, or that calls
    an operator outside the allowlist: checked before `torch.export.load` builds anything from it."""
    try:
        program = json.loads(raw)
    except (ValueError, RecursionError):
        raise ArchiveRefused("The torch.export archive has an unreadable models/model.json.") from None
    if not isinstance(program, dict):
        raise ArchiveRefused("The torch.export archive has an unreadable models/model.json.")
    guards = program.get("guards_code") or []
    if not isinstance(guards, list) or not all(isinstance(guard, str) and _is_size_guard(guard) for guard in guards):
        raise ArchiveRefused(_UNSAFE_SHAPE_CODE)
    constraints = program.get("range_constraints") or {}
    # The deserializer counts up to the number in an unbacked symbol's name ("u123"), one by one.
    if not isinstance(constraints, dict) or any(re.search(r"\d{7}", name) for name in constraints):
        raise ArchiveRefused(_UNSAFE_SHAPE_CODE)
    if not all(isinstance(item, dict) and set(item) == {"as_tensor"} for item in _graph_inputs(program)):
        # A constant input's value is pasted into the code that module() compiles; the node feeds tensors only.
        raise ArchiveRefused(
            "The torch.export program takes inputs that are not tensors; this node feeds models tensors."
        )
    for key, value in _json_items(program):
        if key == "expr_str" and not (isinstance(value, str) and _is_size_expression(value)):
            raise ArchiveRefused(_UNSAFE_SHAPE_CODE)
        if key == "as_operator" and isinstance(value, str):
            _check_serialized_target(value)
        if key == "nodes" and isinstance(value, list):
            for node in value:
                target = node.get("target") if isinstance(node, dict) else None
                if not isinstance(target, str):
                    raise ArchiveRefused("The torch.export archive has an unreadable models/model.json.")
                _check_serialized_target(target)


_UNSAFE_SHAPE_CODE = "The torch.export archive holds shape code that is not plain arithmetic on sizes."


def _check_serialized_target(target: str) -> None:
    name = operators.serialized_target_name(target)
    if name not in operators.ALLOWED_OPERATORS:
        raise operators.refusal(name)


def _graph_inputs(program: dict) -> list:
    """The inputs of a serialized program's top-level graph."""
    graph_module = program.get("graph_module")
    graph = graph_module.get("graph") if isinstance(graph_module, dict) else None
    inputs = graph.get("inputs") if isinstance(graph, dict) else None
    if not isinstance(inputs, list):
        raise ArchiveRefused("The torch.export archive has an unreadable models/model.json.")
    return inputs


def _json_items(document):
    """Every (key, value) of a parsed JSON document's objects, depth first, without recursion."""
    pending = [document]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                yield key, value
                if isinstance(value, dict | list):
                    pending.append(value)
        elif isinstance(current, list):
            pending.extend(item for item in current if isinstance(item, dict | list))


# What the symbolic sizes of a program may say (`Mul(Integer(2), Symbol('s0', positive=True,
# integer=True))`, as sympy's srepr writes them): numbers, symbols and the arithmetic, comparison and
# logic of sympy and of torch.utils._sympy.functions. Names resolve in sympify's namespace, so nothing
# else is allowed: no attribute, no subscript, no other call, no lambda.
_SIZE_FUNCTIONS = {
    "Symbol",
    "Integer",
    "Rational",
    "Float",
    "Add",
    "Mul",
    "Pow",
    "Max",
    "Min",
    "Abs",
    "Mod",
    "floor",
    "ceiling",
    "Equality",
    "Unequality",
    "StrictLessThan",
    "LessThan",
    "StrictGreaterThan",
    "GreaterThan",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "And",
    "Or",
    "Not",
    "Piecewise",
    "FloorDiv",
    "ModularIndexing",
    "Where",
    "PythonMod",
    "CleanDiv",
    "CeilToInt",
    "FloorToInt",
    "CeilDiv",
    "PowByNatural",
    "FloatPow",
    "IntTrueDiv",
    "FloatTrueDiv",
    "TruncToInt",
    "TruncToFloat",
    "RoundToInt",
    "ToFloat",
    "Identity",
}
_SIZE_CONSTANTS = {"oo", "zoo", "nan", "true", "false", "int_oo", "True", "False"}
_POWERS = {"Pow", "PowByNatural", "FloatPow"}
_SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SYMBOL_ID = re.compile(r"[a-z]+\d{1,6}")  # a bare symbol, as older archives write them: s0, u3
_NUMBER_TEXT = re.compile(r"-?\d{1,20}(\.\d{0,20})?([eE]-?\d{1,3})?")
_MAX_SHAPE_CODE = 10_000
# Exponents past this, or a power of a power, make numbers too large to compute.
_MAX_EXPONENT = 64


def _is_size_expression(text: str) -> bool:
    """Whether a symbolic size is plain arithmetic that sympify may evaluate."""
    tree = _parse_shape_code(text)
    if tree is None:
        return False
    # Text is only a symbol's name or a float's digits: the first argument of Symbol() or Float().
    texts = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Symbol", "Float")
        if node.args
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in texts:
            return False
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SIZE_FUNCTIONS:
                return False
            if not _size_call_arguments(node):
                return False
        elif isinstance(node, ast.Name):
            if not (node.id in _SIZE_FUNCTIONS or node.id in _SIZE_CONSTANTS or _SYMBOL_ID.fullmatch(node.id)):
                return False
        elif isinstance(node, ast.BinOp):
            if not _arithmetic_operation(node):
                return False
        elif not isinstance(node, _ARITHMETIC_NODES):
            return False
    return True


def _size_call_arguments(call: ast.Call) -> bool:
    name = cast(ast.Name, call.func).id  # the caller accepts calls of a name only
    for keyword in call.keywords:
        value = keyword.value
        if keyword.arg is None or not isinstance(value, ast.Constant):
            return False
        if keyword.arg == "precision":
            if not (type(value.value) is int and 1 <= value.value <= 113):
                return False
        elif not isinstance(value.value, bool):
            return False
    if name in ("Symbol", "Float") and call.args:
        text = call.args[0]
        pattern = _SYMBOL_NAME if name == "Symbol" else _NUMBER_TEXT
        if not (isinstance(text, ast.Constant) and isinstance(text.value, str) and pattern.fullmatch(text.value)):
            return False
    return name not in _POWERS or (len(call.args) == 2 and _bounded_power(call.args[0], call.args[1]))


def _arithmetic_operation(node: ast.BinOp) -> bool:
    """Whether a binary operation is plain arithmetic, with any power bounded."""
    if not isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div | ast.FloorDiv | ast.Mod | ast.Pow):
        return False
    return not isinstance(node.op, ast.Pow) or _bounded_power(node.left, node.right)


def _bounded_power(base: ast.AST, exponent: ast.AST) -> bool:
    """A power whose exponent is a small whole number and whose base holds no power."""
    if isinstance(exponent, ast.Call) and isinstance(exponent.func, ast.Name) and exponent.func.id == "Integer":
        exponent = exponent.args[0] if len(exponent.args) == 1 else exponent
    if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub):
        exponent = exponent.operand
    if not (isinstance(exponent, ast.Constant) and type(exponent.value) is int and exponent.value <= _MAX_EXPONENT):
        return False
    for node in ast.walk(base):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _POWERS:
            return False
    return True


# Guards are Python: comparisons of the inputs' sizes (`L['x'].size()[0] >= 2`), compiled with exec.
_GUARD_FUNCTIONS = {"max", "min", "abs", "int", "float"}
_GUARD_NAMES = {"L", "math", *_GUARD_FUNCTIONS}
_GUARD_ATTRIBUTES = {"size", "stride", "storage_offset", "numel", "dim", "floor", "ceil", "trunc"}


def _is_size_guard(text: str) -> bool:
    """Whether a guard is plain arithmetic and comparison on the inputs' sizes."""
    tree = _parse_shape_code(text)
    if tree is None:
        return False
    # Text is only a key of L[...], an input's name.
    keys = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys:
            return False
        if isinstance(node, ast.Call):
            if node.keywords:
                return False
            function = node.func
            if isinstance(function, ast.Name) and function.id not in _GUARD_FUNCTIONS:
                return False
            if not isinstance(function, ast.Name | ast.Attribute):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in _GUARD_NAMES:
                return False
        elif isinstance(node, ast.Attribute):
            if node.attr not in _GUARD_ATTRIBUTES:
                return False
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if not isinstance(key, ast.Constant):
                return False
            if isinstance(key.value, str):
                if not key.value.isidentifier() or len(key.value) > 64:
                    return False
            elif not (type(key.value) is int and 0 <= key.value < 2**31):
                return False
        elif isinstance(node, ast.BinOp):
            if not _arithmetic_operation(node):
                return False
        elif not isinstance(node, _ARITHMETIC_NODES):
            return False
    return True


_ARITHMETIC_NODES = (
    ast.Expression,
    ast.Load,
    ast.Constant,
    ast.UnaryOp,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.keyword,
    ast.operator,
)


def _parse_shape_code(text: str) -> ast.Expression | None:
    """The expression's syntax tree when it is short and holds only bounded numbers; else None."""
    if len(text) > _MAX_SHAPE_CODE:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or value is None:
                continue
            if type(value) is int and abs(value) <= 2**64:
                continue
            if type(value) is float or type(value) is str:
                continue
            return None
    return tree


def _check_payload_config(raw: bytes, pattern: re.Pattern, config_name: str) -> set[str]:
    """The tensor files a weights/constants config points at, when all of them are plain tensors."""
    try:
        entries = json.loads(raw)["config"]
        if not isinstance(entries, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ArchiveRefused(f"The torch.export archive has an unreadable {config_name}.") from None
    directory = config_name.rsplit("/", 1)[0]
    paths = set()
    for meta in entries.values():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or meta.get("use_pickle") is not False:
            raise ArchiveRefused("The torch.export archive holds pickled objects; only plain tensors are accepted.")
        path = f"{directory}/{path_name}"
        if not pattern.fullmatch(path):
            raise ArchiveRefused("The torch.export archive holds custom or opaque objects; only tensors are accepted.")
        paths.add(path)
    return paths


def load(source: IO[bytes], *, max_unpacked_bytes: int) -> "torch.jit.ScriptModule | torch.export.ExportedProgram":
    """An archive of either kind, checked and loaded: what `detect_kind` finds, then `load_checked`."""
    kind = detect_kind(source, max_unpacked_bytes=max_unpacked_bytes)
    return load_checked(source, kind, max_unpacked_bytes=max_unpacked_bytes)


def load_checked(
    source: IO[bytes], kind: str, *, max_unpacked_bytes: int
) -> "torch.jit.ScriptModule | torch.export.ExportedProgram":
    """Load an archive of a known kind: checked before torch reads it, its operators checked before it runs.

    A TorchScript archive loads as a ScriptModule on the CPU (in the mode it was saved in), a
    torch.export archive as an ExportedProgram. Anything refused raises `ArchiveRefused`, and so does
    an archive that passes the checks but that torch cannot load.
    """
    check_zip(source, what="The model archive", max_unpacked_bytes=max_unpacked_bytes)
    if kind == PLAN:
        check_plan_archive(source, max_unpacked_bytes=max_unpacked_bytes)
        return _load_plan(source)
    check_jit_archive(source)
    return _load_jit(source)


# The globals TorchScript's pickler writes into data.pkl, constants.pkl and the debug pickles: the
# archive's own classes (`__torch__.*`, compiled from its code/ folder), tensors and their storages,
# and its list/dict helpers. C++ custom classes (`__torch__.torch.classes.*`) are restored by C++
# code of their own, so they are refused even though they live under `__torch__`.
_JIT_PICKLE_GLOBALS = {
    "collections": re.compile(r"OrderedDict"),
    "torch": re.compile(r"[A-Za-z]+Storage"),
    "torch._utils": re.compile(r"_rebuild_tensor_v2"),
    "torch.jit._pickle": re.compile(r"build_[a-z]+list|build_tensor_from_id|restore_type_tag"),
}
_CUSTOM_CLASSES = "__torch__.torch.classes"


def check_jit_archive(source: IO[bytes]) -> None:
    """Refuse a TorchScript archive that would run anything of its own while torch.jit.load restores it."""
    try:
        with zipfile.ZipFile(source) as archive:
            root, names = _root_and_names(archive)
            for name in sorted(names):
                if name.endswith(".py"):
                    # A plain byte search: whatever TorchScript's parser makes of the file, a method it
                    # could call __setstate__ needs these bytes.
                    if b"__setstate__" in archive.read(f"{root}/{name}"):
                        raise ArchiveRefused(
                            "The TorchScript archive defines __setstate__, which torch runs while loading "
                            "the archive; this node does not load such archives."
                        )
                elif name.endswith("pkl"):
                    _check_jit_pickle(archive.read(f"{root}/{name}"))
    except zipfile.BadZipFile:
        raise ArchiveRefused("The model is not a readable zip archive.") from None
    finally:
        source.seek(0)


def _check_jit_pickle(raw: bytes) -> None:
    """Every global a TorchScript pickle names is one TorchScript's pickler writes; nothing is unpickled."""
    try:
        for opcode, argument, _ in pickletools.genops(raw):
            if opcode.name in ("STACK_GLOBAL", "INST", "OBJ"):
                raise ArchiveRefused("The TorchScript archive holds a pickle that TorchScript does not write.")
            if opcode.name != "GLOBAL":
                continue
            module, _, name = str(argument).partition(" ")
            if module == _CUSTOM_CLASSES or module.startswith(f"{_CUSTOM_CLASSES}."):
                raise ArchiveRefused(
                    "The TorchScript archive holds a C++ custom class object, which torch restores with code "
                    "of its own; this node does not load such archives."
                )
            if module == "__torch__" or module.startswith("__torch__."):
                continue
            pattern = _JIT_PICKLE_GLOBALS.get(module)
            if pattern is None or not pattern.fullmatch(name):
                raise ArchiveRefused("The TorchScript archive's pickles name a global this node does not load.")
    except ValueError:
        raise ArchiveRefused("The TorchScript archive holds a pickle that cannot be read.") from None


def _load_jit(source: IO[bytes]) -> torch.jit.ScriptModule:
    try:
        module = torch.jit.load(source, map_location="cpu")
    except Exception as exc:
        raise ArchiveRefused(f"The TorchScript archive does not load: {last_line(exc)}") from None
    finally:
        source.seek(0)
    operators.check_script_module(module)
    forward = getattr(module, "forward", None)
    if forward is None or not hasattr(forward, "schema"):
        raise ArchiveRefused("The TorchScript archive has no forward method.")
    return module


def _load_plan(source: IO[bytes]) -> torch.export.ExportedProgram:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(source)
    except ArchiveRefused:
        raise
    except Exception as exc:
        raise ArchiveRefused(f"The torch.export archive does not load: {last_line(exc)}") from None
    finally:
        source.seek(0)
    operators.check_exported_program(program)
    return program
