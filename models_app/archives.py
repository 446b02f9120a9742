"""Model archives on the node: the archive rules of gridarchive, wired to the node's settings and errors.

The checks themselves (zip limits, the entries and pickles of each kind, the operator allowlist) are
in the Django-free package gridarchive, so the client applies the same ones to what it downloads.
Here: the node's limits (GRIDNODE_MAX_MODEL_BYTES, GRIDNODE_LOAD_TIMEOUT), every refusal answered as a
400 (`BadRequest`), and `LoadedModel`, a checked model ready to run. The same checks run on every load,
so a model loaded from storage on a cache miss is checked again.
"""

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, cast

import torch

from gridarchive import archives as rules
from gridarchive.archives import JIT, PLAN, last_line
from gridarchive.errors import ArchiveRefused
from gridnode.errors import BadRequest


@contextmanager
def refusals_as_bad_request() -> Iterator[None]:
    """Answer a refusal of the archive rules as the node's 400, with the rule's own message."""
    try:
        yield
    except ArchiveRefused as refused:
        raise BadRequest(refused.message) from None


@dataclass
class LoadedModel:
    """A model ready to run: the callable, how many inputs it takes, and their dtypes when known."""

    kind: str
    module: torch.nn.Module
    input_count: int
    input_dtypes: list[torch.dtype | None] = field(default_factory=list)
    # How many times any model's code was started in this process (an inference process reports whether
    # a request got that far: see executor_pool.handle).
    runs: ClassVar[int] = 0

    def run(self, inputs: list[torch.Tensor], *, all_outputs: bool):
        """The model's output for these inputs: the first output, or all of them when asked."""
        if len(inputs) != self.input_count:
            raise BadRequest(f"This model takes {self.input_count} input(s); the data holds {len(inputs)}.")
        LoadedModel.runs += 1
        # Dropout left on draws from the process's generator. Seeded afresh for every run, no run's draws
        # depend on an earlier caller's: kept from run to run, a stranger's model moved it on as far as
        # its caller's data said and showed the next caller where it stood (tests/security).
        torch.default_generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
        try:
            # TorchScript's optimizing executor spent 20-35 ms profiling a model's first calls (per thread)
            # and then ran the reference MLP slower than without it (26 us vs 20 us a call, CPU): off.
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                output = self.module(*inputs)
        except Exception as exc:  # a model raises whatever its code raises on data that does not fit it
            if is_out_of_memory(exc):
                raise MemoryError(last_line(exc)) from None  # the memory cap, not the caller's data
            raise BadRequest(f"The data does not fit the model: {last_line(exc)}") from None
        if isinstance(output, list | tuple):
            if not output:
                raise BadRequest("The model answered nothing (an empty tuple).")
            return list(output) if all_outputs else output[0]
        return [output] if all_outputs else output


# What torch's allocator says when an allocation fails (under the inference memory cap, RLIMIT_DATA).
_OUT_OF_MEMORY_TEXT = ("can't allocate memory", "not enough memory", "std::bad_alloc", "Cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception says an allocation failed (Python's MemoryError, or torch's allocator)."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OUT_OF_MEMORY_TEXT)


def seekable(stored) -> IO[bytes]:
    """The plain file object behind a storage file; torch's loaders only take real buffers."""
    inner = getattr(stored, "file", None)
    if isinstance(inner, io.IOBase) and inner.seekable():
        return cast(IO[bytes], inner)  # a storage file's file is opened in binary mode
    return io.BytesIO(stored.read())


def archive_size(path: str | None) -> int:
    """An archive's size in bytes from its local path; the largest the node accepts when it has none."""
    from django.conf import settings

    try:
        return Path(path).stat().st_size if path else settings.GRIDNODE_MAX_MODEL_BYTES
    except OSError:
        return settings.GRIDNODE_MAX_MODEL_BYTES


def load_seconds(size: int) -> float:
    """How long loading and checking an archive of `size` bytes may take: 5 s, plus a second per 10 MB,
    at most GRIDNODE_LOAD_TIMEOUT. Loading is mostly reading weights; a small archive that takes longer
    is one whose checks blow up (a call tree that doubles at every level, inlined)."""
    from django.conf import settings

    return min(settings.GRIDNODE_LOAD_TIMEOUT, 5 + size / 10_000_000)


def unpack_limit() -> int:
    """The most bytes an archive may unpack to: what the node accepts as an archive."""
    from django.conf import settings

    return settings.GRIDNODE_MAX_MODEL_BYTES


def detect_kind(source: IO[bytes], *, max_unpacked_bytes: int | None = None) -> str:
    """`jit` or `plan` from the archive's layout; a 400 for anything else, zip bombs included."""
    limit = unpack_limit() if max_unpacked_bytes is None else max_unpacked_bytes
    with refusals_as_bad_request():
        return rules.detect_kind(source, max_unpacked_bytes=limit)


def load_archive(source: IO[bytes], kind: str, *, max_unpacked_bytes: int | None = None) -> LoadedModel:
    """Load an archive of a known kind: checked before torch reads it, its operators checked before it
    runs (gridarchive.archives.load_checked), then put in eval mode, ready to run."""
    limit = unpack_limit() if max_unpacked_bytes is None else max_unpacked_bytes
    with refusals_as_bad_request():
        loaded = rules.load_checked(source, kind, max_unpacked_bytes=limit)
    if kind == PLAN:
        program = cast(torch.export.ExportedProgram, loaded)  # what a PLAN archive loads as
        placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
        dtypes = []
        for name in program.graph_signature.user_inputs:
            value = placeholders[name].meta.get("val") if name in placeholders else None
            dtypes.append(getattr(value, "dtype", None))
        return LoadedModel(kind=PLAN, module=program.module(), input_count=len(dtypes), input_dtypes=dtypes)
    script = cast(torch.jit.ScriptModule, loaded)  # what a JIT archive loads as
    # Eval mode is what makes a module's `if self.training:` branches dead (see gridarchive.operators).
    script.eval()
    forward = cast(torch._C.ScriptMethod, script.forward)  # a compiled method, typed as a plain callable
    input_count = len(forward.schema.arguments) - 1  # less `self`
    return LoadedModel(kind=JIT, module=script, input_count=input_count, input_dtypes=[None] * input_count)
