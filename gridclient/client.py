"""`GridNodeClient`: every endpoint of a grid node as a Python method taking and giving torch objects."""

import functools
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, cast

from gridclient import tensors
from gridclient.errors import DATASETS, MODELS, ModelNotScriptable, ModelRefused, PermissionDenied, ServerError
from gridclient.multipart import MultipartBody
from gridclient.transport import DEFAULT_MAX_ANSWER_BYTES, Transport, path_segment

if TYPE_CHECKING:
    import torch

DEFAULT_URL = "http://127.0.0.1:8000"
# Generous: a large archive is checked by loading it on the node before the node answers its upload.
DEFAULT_TIMEOUT = 300.0


class EncryptedModelNodes(NamedTuple):
    """Where the shares of an encrypted model live: its worker nodes and its crypto provider(s)."""

    workers: list[str]
    crypto_provider: list[str]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _answer_field(answer: Any, key: str):
    """A key of the node's JSON answer, or a ServerError when the answer does not have it."""
    if not isinstance(answer, dict) or key not in answer:
        raise ServerError(200, f"The node's answer has no '{key}'.")
    return answer[key]


class GridNodeClient:
    """A grid node at `url`, reached over HTTP.

    `url` defaults to $GRIDNODE_URL, else http://127.0.0.1:8000; `token` to $GRIDNODE_TOKEN (sent as
    `Authorization: Token <key>`; pass token="" to send none). `timeout` is in seconds, for connecting
    and for each wait on the node. `progress` shows a bar for uploads and downloads: None (the default)
    shows one only when stderr is a terminal; each transfer method can override it. `max_answer_bytes`
    bounds every answer read into memory (JSON, SMPC messages; 256 MiB by default); downloads, which go
    to disk, take a `max_bytes` of their own. The node is reached through the proxy HTTPS_PROXY /
    HTTP_PROXY / ALL_PROXY names unless NO_PROXY lists its host, as with `requests`.

    Failures raise the exceptions of `gridclient.errors`: the node's errors with its status and message
    (`ModelNotFound`, `PermissionDenied`, `ModelExists`, `InvalidRequest`, ...), `NodeUnreachable` when it
    does not answer, `ServerError` when its answer cannot be read (`AnswerTooLarge` past the limits),
    and `ModelRefused` when `download_model` will not load what it answered.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        progress: bool | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ):
        if token is None:
            token = os.environ.get("GRIDNODE_TOKEN")
        self._transport = Transport(
            url or os.environ.get("GRIDNODE_URL") or DEFAULT_URL,
            token=token or None,
            timeout=timeout,
            max_answer_bytes=max_answer_bytes,
        )
        self.progress = progress

    @property
    def url(self) -> str:
        return self._transport.url

    def __repr__(self) -> str:
        return f"GridNodeClient({self.url!r})"

    def _progress(self, progress: bool | None) -> bool | None:
        return self.progress if progress is None else progress

    # -- models --------------------------------------------------------------------------------------

    def serve_model(
        self,
        model,
        model_id: str,
        *,
        allow_download: bool = False,
        allow_remote_inference: bool = False,
        progress: bool | None = None,
    ) -> str:
        """Host a model on the node under `model_id`; answer the node's message.

        `model` is an nn.Module (compiled with torch.jit.script; `ModelNotScriptable` when it cannot be,
        as tracing could silently drop its control flow), a ScriptModule, an ExportedProgram, the path of
        a TorchScript or torch.export archive, or an archive's bytes. The archive is streamed from disk
        as a multipart part, so a large model is never held twice in memory. Call `.eval()` first if the
        model has dropout or batch norm: it is sent in the mode it is in.
        """
        fields = [
            ("model_id", model_id),
            ("allow_download", _flag(allow_download)),
            ("allow_remote_inference", _flag(allow_remote_inference)),
        ]
        with _archive_file(model) as (source, size, filename):
            body = MultipartBody(fields, file_field="model", filename=filename, source=source, size=size)
            answer = self._transport.upload(
                "/serve-model", body, kinds=MODELS, progress=self._progress(progress), description=f"upload {model_id}"
            )
        return _answer_field(answer, "message")

    def models(self) -> list[str]:
        """The ids of every model hosted on the node, oldest first."""
        return _answer_field(self._transport.json("GET", "/models", kinds=MODELS), "models")

    def delete_model(self, model_id: str) -> None:
        """Remove a model from the node (`ModelNotFound` when there is none with that id)."""
        self._transport.json("POST", "/delete-model", {"model_id": model_id}, kinds=MODELS)

    def is_model_copy_allowed(self, model_id: str) -> bool:
        """Whether the model's owner lets others download it (`ModelNotFound` when there is no such model)."""
        try:
            self._transport.json("GET", f"/is_model_copy_allowed/{path_segment(model_id)}", kinds=MODELS)
        except PermissionDenied:
            return False
        return True

    def download_archive(
        self,
        model_id: str,
        destination: str | os.PathLike | BinaryIO,
        *,
        progress: bool | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Write the model's archive, exactly the bytes uploaded, to a path or a binary file; answer the size.

        Streamed to disk a chunk at a time, and not checked or loaded: see `download_model` for that. A
        path is written through a temporary file beside it and renamed when complete, so a failed download
        leaves no partial file. With `max_bytes`, a larger answer raises `AnswerTooLarge` (a file object
        keeps what was written before the limit was passed).
        """
        path = f"/get_model/{path_segment(model_id)}"
        download = functools.partial(
            self._transport.download,
            path,
            kinds=MODELS,
            progress=self._progress(progress),
            description=f"download {model_id}",
            max_bytes=max_bytes,
        )
        if hasattr(destination, "write"):
            return download(cast(BinaryIO, destination))  # a file object (hasattr does not narrow the union)
        target = Path(destination)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as file:
                size = download(file)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return size

    def download_model(self, model_id: str, *, progress: bool | None = None, max_bytes: int | None = None):
        """The model itself: a ScriptModule (loaded on the CPU, in the mode it was saved in) or an
        ExportedProgram.

        The archive goes to a temporary file first, and is checked by the node's own rules before torch
        reads it (gridarchive: the zip's directory, every pickle and entry, then every operator the model
        could run): an archive the node would refuse to host raises `ModelRefused` and nothing of it runs,
        whoever answered (a hostile node, or anyone on a plain-http path). `max_bytes` bounds the download
        (`AnswerTooLarge`) and what the archive may unpack to.
        """
        with tempfile.TemporaryDirectory(prefix="gridclient-") as folder:
            path = Path(folder) / "model.pt2"
            size = self.download_archive(model_id, path, progress=progress, max_bytes=max_bytes)
            return _checked_model(path, size, model_id=model_id, max_bytes=max_bytes)

    def save_model(
        self,
        model_id: str,
        destination: str | os.PathLike,
        *,
        progress: bool | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Save the model's archive, exactly the bytes uploaded, to a path once it passed the checks that
        `download_model` makes; answer its size. An archive they refuse raises `ModelRefused` and leaves no
        file: what lands at `destination` passed the checks the node makes before it loads an upload."""
        target = Path(destination)
        with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as folder:
            path = Path(folder) / "model"
            size = self.download_archive(model_id, path, progress=progress, max_bytes=max_bytes)
            _checked_model(path, size, model_id=model_id, max_bytes=max_bytes)
            os.replace(path, target)
        return size

    def run_inference(self, model_id: str, *inputs: "torch.Tensor", all_outputs: bool = False):
        """Run the model on the node: one tensor per model input; answer its output tensor.

        Tensors travel as base64 `torch.save` bytes, so dtypes and shapes arrive exactly. A model that
        returns a tuple answers its first output, unless `all_outputs=True` (then a tuple of every output).
        """
        if not inputs:
            raise TypeError("run_inference needs one tensor per model input.")
        data = inputs[0] if len(inputs) == 1 else list(inputs)
        payload: dict[str, Any] = {"encoding": "base64", "data": tensors.encode(data)}
        if all_outputs:
            payload["all_outputs"] = True
        prediction = self._infer(model_id, payload)
        result = tensors.decode(prediction)
        if all_outputs:
            return tuple(result) if isinstance(result, list | tuple) else (result,)
        return result

    def run_inference_json(self, model_id: str, data, *, all_outputs: bool = False):
        """Run the model on plain JSON numbers (nested lists, one per input for several inputs).

        The node picks the dtype (the model's declared one, else float32); the answer is nested lists.
        """
        payload: dict[str, Any] = {"data": data}
        if all_outputs:
            payload["all_outputs"] = True
        return self._infer(model_id, payload)

    def _infer(self, model_id: str, payload: dict):
        answer = self._transport.json("POST", f"/model/{path_segment(model_id)}", payload, kinds=MODELS)
        return _answer_field(answer, "prediction")

    # -- datasets ------------------------------------------------------------------------------------

    def upload_dataset(
        self,
        data: "torch.Tensor | str | os.PathLike",
        *,
        tags: Iterable[str] = (),
        description: str = "",
        allow_download: bool = False,
        dataset_id: str | None = None,
        progress: bool | None = None,
    ) -> dict:
        """Put a tensor (or a file saved with torch.save) on the node with its tags; answer its metadata.

        The node names the dataset unless `dataset_id` is given (`DatasetExists` when it is taken). The
        tensor is saved to a temporary file and streamed from there as a multipart part.
        """
        fields = [] if dataset_id is None else [("id", dataset_id)]
        fields += [("tags", tag) for tag in ([tags] if isinstance(tags, str) else tags)]
        if description:
            fields.append(("description", description))
        fields.append(("allow_download", _flag(allow_download)))
        with _tensor_file(data) as (source, size, filename):
            body = MultipartBody(fields, file_field="data", filename=filename, source=source, size=size)
            return self._transport.upload(
                "/datasets",
                body,
                kinds=DATASETS,
                progress=self._progress(progress),
                description=f"upload {dataset_id or 'dataset'}",
            )

    def dataset_tags(self) -> list[str]:
        """Every tag on the node's datasets, sorted, each once."""
        return self._transport.json("GET", "/dataset-tags", kinds=DATASETS)

    def search(self, *terms: str) -> bool:
        """Whether one dataset on the node matches every term (a tag, its id, or words of its description)."""
        answer = self._transport.json("POST", "/search", {"query": list(terms)}, kinds=DATASETS)
        return bool(_answer_field(answer, "content"))

    # -- encrypted models ----------------------------------------------------------------------------

    def register_encrypted_model(
        self,
        model_id: str,
        workers: Iterable[str],
        crypto_provider: str | Iterable[str],
        *,
        description: str = "",
    ) -> dict:
        """Record which worker nodes hold the shares of an encrypted model, and its crypto provider(s)."""
        providers = [crypto_provider] if isinstance(crypto_provider, str) else list(crypto_provider)
        payload = {"model_id": model_id, "workers": list(workers), "crypto_provider": providers}
        if description:
            payload["description"] = description
        return self._transport.json("POST", "/encrypted-models", payload, kinds=MODELS)

    def delete_encrypted_model(self, model_id: str) -> None:
        """Remove an encrypted model's registration from this node, with this node's share of it."""
        self._transport.json("DELETE", f"/encrypted-models/{path_segment(model_id)}", kinds=MODELS)

    def upload_model_share(
        self,
        model_id: str,
        part: "dict[str, torch.Tensor]",
        *,
        spec: dict,
        role: str,
        party: int | None = None,
        allow_remote_inference: bool = False,
        allow_download: bool = False,
    ) -> dict:
        """Store this node's part of a registered encrypted model (`gridclient.encrypted` makes the parts)."""
        import torch

        fields = [
            ("role", role),
            ("spec", json.dumps(spec)),
            ("allow_remote_inference", _flag(allow_remote_inference)),
            ("allow_download", _flag(allow_download)),
        ]
        if party is not None:
            fields.append(("party", str(party)))
        buffer = io.BytesIO()
        torch.save(part, buffer)
        size = buffer.tell()
        buffer.seek(0)
        body = MultipartBody(fields, file_field="share", filename=f"{model_id}.share", source=buffer, size=size)
        return self._transport.upload(
            f"/encrypted-models/{path_segment(model_id)}/share",
            body,
            kinds=MODELS,
            progress=False,
            description=f"share of {model_id}",
        )

    def evaluate_share(self, model_id: str, message: bytes) -> bytes:
        """Send a worker its packed input share; answer its packed output share (see `gridclient.encrypted`)."""
        return self._transport.message(f"/encrypted-models/{path_segment(model_id)}/inference", message, kinds=MODELS)

    def search_encrypted_models(self, model_id: str) -> EncryptedModelNodes:
        """The worker and crypto-provider URLs of an encrypted model (`ModelNotFound` when unregistered)."""
        answer = self._transport.json("POST", "/search-encrypted-models", {"model_id": model_id}, kinds=MODELS)
        return EncryptedModelNodes(
            workers=_answer_field(answer, "workers"), crypto_provider=_answer_field(answer, "crypto_provider")
        )


@contextmanager
def _open_file(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int, str]]:
    with open(path, "rb") as source:
        yield source, os.fstat(source.fileno()).st_size, Path(path).name


@contextmanager
def _archive_file(model) -> Iterator[tuple[BinaryIO, int, str]]:
    """The model as an archive file to stream: the caller's own file, or one saved to a temp folder."""
    if isinstance(model, str | os.PathLike):
        with _open_file(model) as opened:
            yield opened
        return
    if isinstance(model, bytes | bytearray | memoryview):
        yield io.BytesIO(model), len(model), "model"
        return
    # Imported only here: uploading a file needs no torch.
    import torch

    with tempfile.TemporaryDirectory(prefix="gridclient-") as folder:
        if isinstance(model, torch.export.ExportedProgram):
            path = Path(folder) / "model.pt2"
            torch.export.save(model, path)
        elif isinstance(model, torch.jit.ScriptModule):
            path = Path(folder) / "model.pt"
            torch.jit.save(model, str(path))
        elif isinstance(model, torch.nn.Module):
            path = Path(folder) / "model.pt"
            torch.jit.save(_scripted(model), str(path))
        else:
            raise TypeError(
                "serve_model takes an nn.Module, a ScriptModule, an ExportedProgram, an archive's path or its "
                f"bytes, not {type(model).__name__}."
            )
        with _open_file(path) as opened:
            yield opened


def _scripted(module: "torch.nn.Module") -> "torch.jit.ScriptModule":
    """The module compiled by torch.jit.script, or `ModelNotScriptable` saying why and what to do."""
    import torch

    try:
        return torch.jit.script(module)
    except Exception as exc:  # the TorchScript compiler raises many types, all meaning "cannot compile"
        raise ModelNotScriptable(
            f"torch.jit.script cannot compile {type(module).__name__}, so it was not sent. Make it scriptable, "
            "or export it with torch.export.export(model, example_inputs) and serve the ExportedProgram. "
            f"TorchScript said: {exc}"
        ) from exc


@contextmanager
def _tensor_file(data) -> Iterator[tuple[BinaryIO, int, str]]:
    """A dataset tensor as a torch.save file to stream: the caller's own file, or one in a temp folder."""
    if isinstance(data, str | os.PathLike):
        with _open_file(data) as opened:
            yield opened
        return
    import torch

    if not isinstance(data, torch.Tensor):
        raise TypeError(f"upload_dataset takes a tensor or the path of a torch.save file, not {type(data).__name__}.")
    with tempfile.TemporaryDirectory(prefix="gridclient-") as folder:
        path = Path(folder) / "data.pt"
        torch.save(data, path)
        with _open_file(path) as opened:
            yield opened


def _checked_model(path: Path, size: int, *, model_id: str, max_bytes: int | None):
    """The model in a downloaded archive, checked by the node's own upload rules before torch reads it
    (gridarchive), or `ModelRefused` saying why not."""
    from gridarchive import ArchiveRefused
    from gridarchive.archives import load
    from gridarchive.ziplimits import MAX_EXPANSION

    # What the archive may unpack to: max_bytes when given; else only the zip check's own bound (at most ten
    # times the archive's size: torch stores its entries uncompressed).
    limit = max_bytes if max_bytes is not None else max(size, 1) * MAX_EXPANSION
    try:
        with open(path, "rb") as source:
            return load(source, max_unpacked_bytes=limit)
    except ArchiveRefused as refused:
        reason = refused.message
    except RecursionError:  # a walk over a program nested past Python's stack: not a model to load
        reason = "The model is nested too deeply to check."
    raise ModelRefused(200, f"The node's archive of {model_id!r} is refused: {reason}")
