"""Model archives: recognise the kind, check an untrusted archive before torch sees it, load and run it.

Two kinds are hosted. A TorchScript archive (`torch.jit.save`, kind `jit`) is loaded by TorchScript's
own restricted unpickler, which refuses foreign globals. A torch.export archive (`torch.export.save`,
kind `plan`) is not safe to hand to `torch.export.load` as it is: it unpickles some entries with
`weights_only=False` or plain `pickle.loads`. So every entry of a plan is checked against what
`torch.export.save` writes, and its one pickle (the sample inputs) must pass the safe loader first.
"""

import io
import json
import re
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

from gridnode.errors import BadRequest

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


@dataclass
class LoadedModel:
    """A model ready to run: the callable, how many inputs it takes, and their dtypes when known."""

    kind: str
    module: torch.nn.Module
    input_count: int
    input_dtypes: list[torch.dtype | None] = field(default_factory=list)

    def run(self, inputs: list[torch.Tensor], *, all_outputs: bool):
        """The model's output for these inputs: the first output, or all of them when asked."""
        if len(inputs) != self.input_count:
            raise BadRequest(f"This model takes {self.input_count} input(s); the data holds {len(inputs)}.")
        try:
            with torch.inference_mode():
                output = self.module(*inputs)
        except Exception as exc:  # a model raises whatever its code raises on data that does not fit it
            raise BadRequest(f"The data does not fit the model: {_last_line(exc)}") from None
        if isinstance(output, list | tuple):
            return list(output) if all_outputs else output[0]
        return [output] if all_outputs else output


def _last_line(exc: Exception) -> str:
    # TorchScript errors carry a whole interpreter trace; its last line states the reason.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _root_and_names(archive: zipfile.ZipFile) -> tuple[str, set[str]]:
    """The archive's single root folder and its entry names relative to it."""
    names = archive.namelist()
    if not names:
        raise BadRequest("The model archive is empty.")
    root = names[0].split("/", 1)[0]
    relative = set()
    for name in names:
        head, _, rest = name.partition("/")
        if head != root or not rest:
            raise BadRequest("The model archive must hold one root folder, as torch writes it.")
        relative.add(rest)
    return root, relative


def detect_kind(source: IO[bytes]) -> str:
    """`jit` or `plan` from the archive's layout; a 400 for anything else."""
    try:
        with zipfile.ZipFile(source) as archive:
            _, names = _root_and_names(archive)
    except zipfile.BadZipFile:
        raise BadRequest("The model is not a TorchScript or torch.export archive (not a zip file).") from None
    finally:
        source.seek(0)
    if "archive_format" in names and "models/model.json" in names:
        return PLAN
    if {"data.pkl", "constants.pkl"} <= names and any(name.startswith("code/") for name in names):
        return JIT
    raise BadRequest("The zip file is neither a TorchScript archive nor a torch.export archive.")


def check_plan_archive(source: IO[bytes]) -> None:
    """Refuse a torch.export archive unless torch.export.load would unpickle nothing unsafe from it."""
    try:
        with zipfile.ZipFile(source) as archive:
            root, names = _root_and_names(archive)

            def read(name: str) -> bytes:
                return archive.read(f"{root}/{name}")

            if read("archive_format").strip() != b"pt2":
                raise BadRequest("The torch.export archive has an unknown format.")
            payloads = set()
            for config_name, pattern in (
                ("data/weights/model_weights_config.json", _PLAN_WEIGHT_RE),
                ("data/constants/model_constants_config.json", _PLAN_CONSTANT_RE),
            ):
                payloads |= _check_payload_config(read(config_name), pattern, config_name)
            unexpected = sorted(names - _PLAN_FIXED_ENTRIES - payloads)
            if unexpected:
                raise BadRequest(f"The torch.export archive holds an entry this node does not load: {unexpected[0]}")
            missing = sorted((_PLAN_FIXED_ENTRIES | payloads) - names)
            if missing:
                raise BadRequest(f"The torch.export archive is missing {missing[0]}.")
            try:
                torch.load(io.BytesIO(read("data/sample_inputs/model.pt")), weights_only=True)
            except Exception:
                raise BadRequest("The torch.export archive's sample inputs are not plain tensors.") from None
    except zipfile.BadZipFile:
        raise BadRequest("The model is not a readable zip archive.") from None
    except KeyError as exc:
        raise BadRequest(f"The torch.export archive is missing {exc.args[0]}.") from None
    finally:
        source.seek(0)


def _check_payload_config(raw: bytes, pattern: re.Pattern, config_name: str) -> set[str]:
    """The tensor files a weights/constants config points at, when all of them are plain tensors."""
    try:
        entries = json.loads(raw)["config"]
        if not isinstance(entries, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise BadRequest(f"The torch.export archive has an unreadable {config_name}.") from None
    directory = config_name.rsplit("/", 1)[0]
    paths = set()
    for meta in entries.values():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or meta.get("use_pickle") is not False:
            raise BadRequest("The torch.export archive holds pickled objects; only plain tensors are accepted.")
        path = f"{directory}/{path_name}"
        if not pattern.fullmatch(path):
            raise BadRequest("The torch.export archive holds custom or opaque objects; only tensors are accepted.")
        paths.add(path)
    return paths


def load_archive(source: IO[bytes], kind: str) -> LoadedModel:
    """Load an archive of a known kind, checking a plan before torch.export sees it."""
    if kind == PLAN:
        check_plan_archive(source)
        return _load_plan(source)
    return _load_jit(source)


def _load_jit(source: IO[bytes]) -> LoadedModel:
    try:
        module = torch.jit.load(source, map_location="cpu")
    except Exception as exc:
        raise BadRequest(f"The TorchScript archive does not load: {_last_line(exc)}") from None
    finally:
        source.seek(0)
    forward = getattr(module, "forward", None)
    if forward is None or not hasattr(forward, "schema"):
        raise BadRequest("The TorchScript archive has no forward method.")
    module.eval()
    input_count = len(forward.schema.arguments) - 1  # less `self`
    return LoadedModel(kind=JIT, module=module, input_count=input_count, input_dtypes=[None] * input_count)


def _load_plan(source: IO[bytes]) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(source)
    except BadRequest:
        raise
    except Exception as exc:
        raise BadRequest(f"The torch.export archive does not load: {_last_line(exc)}") from None
    finally:
        source.seek(0)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    dtypes = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        dtypes.append(getattr(value, "dtype", None))
    return LoadedModel(kind=PLAN, module=program.module(), input_count=len(dtypes), input_dtypes=dtypes)


def check_in_child_process(path: Path, kind: str, *, timeout: float) -> None:
    """Prove an archive loads, in a short-lived child process, so its weights never live in this one.

    Large uploads are checked this way: the serving process stays small, and whatever the archive
    does while loading happens in a process that exits right after.
    """
    command = [sys.executable, "-m", "models_app.archives", str(path), kind]
    try:
        result = subprocess.run(
            command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise BadRequest(f"The archive did not finish loading within {timeout:.0f} seconds.") from None
    if result.returncode == _REFUSED:
        raise BadRequest(result.stdout.strip().splitlines()[-1])
    if result.returncode != 0:
        raise BadRequest(f"The archive could not be loaded (the loader stopped with code {result.returncode}).")


_REFUSED = 3


def _check_main(path: str, kind: str) -> int:
    """`python -m models_app.archives PATH KIND`: exit 0 when the archive loads, else print why."""
    try:
        with open(path, "rb") as source:
            load_archive(source, kind)
    except BadRequest as exc:
        print(exc.message)
        return _REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(_check_main(sys.argv[1], sys.argv[2]))
