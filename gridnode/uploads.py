"""Uploads: request bodies read whole or not at all, multipart parts read in large chunks, hashed while
written and stopped at their endpoint's size limit, and staged for storage.

A 1 GiB model arrives in 1 MiB chunks instead of Django's 64 KiB (a sixteenth of the parsing rounds),
and its sha256 is known when the part is complete, so storing it needs no second pass over the file.
"""

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from time import perf_counter
from typing import cast

import orjson
from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler
from django.urls import Resolver404, resolve

from gridnode.errors import PayloadTooLarge
from gridnode.http import SECURITY_HEADERS
from gridnode.observability import observe_request

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
# Keys this module keeps in a request's WSGI environ (Django's request.META is that same dict).
PART_LIMIT = "gridnode.file_part_limit"
STAGED_PARTS = "gridnode.staged_parts"


def limit_file_parts(request, *, limit: int, what: str) -> None:
    """Refuse any multipart file part of this request past `limit` bytes (a 413 saying `what` it is).

    The part is stopped while it arrives, instead of being written whole to the staging folder and
    refused afterwards; call this before the view reads the body.
    """
    request.META[PART_LIMIT] = (limit, what)


def _check_part_size(request, received: int) -> None:
    bound = request.META.get(PART_LIMIT) if request is not None else None
    if bound is not None and received > bound[0]:
        limit, what = bound
        raise PayloadTooLarge(f"The {what} is larger than this node accepts ({limit} bytes).")


class HashingMemoryFileUploadHandler(MemoryFileUploadHandler):
    """Small parts stay in memory, as Django's default; hashed later from memory."""

    chunk_size = CHUNK_SIZE

    def receive_data_chunk(self, raw_data, start):
        if self.activated:
            _check_part_size(self.request, start + len(raw_data))
        return super().receive_data_chunk(raw_data, start)


class HashingTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Large parts go to a temporary file in FILE_UPLOAD_TEMP_DIR, hashed on the way."""

    chunk_size = CHUNK_SIZE

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()
        if self.request is not None:
            # Closed (so removed) when the request ends, even when parsing stopped half-way through
            # this part; see `WholeBodies`.
            self.request.META.setdefault(STAGED_PARTS, []).append(self.file)

    def receive_data_chunk(self, raw_data, start):
        try:
            _check_part_size(self.request, start + len(raw_data))
        except PayloadTooLarge:
            self.file.close()  # a NamedTemporaryFile: closing removes it
            raise
        self._digest.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        uploaded = cast(TemporaryUploadedFile, super().file_complete(file_size))  # this handler's always is one
        uploaded.sha256 = self._digest.hexdigest()  # type: ignore[attr-defined]  # ours, read back by stage_to_disk
        return uploaded


class StagedFile(File):
    """A staged upload that FileSystemStorage moves into place instead of copying."""

    def __init__(self, path: Path):
        super().__init__(open(path, "rb"), name=path.name)  # noqa: SIM115 (closed by its owner's `with`)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def stage_to_disk(*, upload=None, content: bytes | None = None) -> tuple[Path, int, str, bool]:
    """An upload as a file in the staging folder, hashed on the way: (path, size, sha256, owned).

    A multipart part that Django already wrote to disk is used in place (`owned` is False: Django
    removes it after the request unless it was moved into storage); anything else is written to a
    new file that the caller owns and must remove if it does not store it.
    """
    if upload is not None and hasattr(upload, "temporary_file_path"):
        path = Path(upload.temporary_file_path())
        sha256 = getattr(upload, "sha256", None)  # set by HashingTemporaryFileUploadHandler
        if sha256 is None:
            digest = hashlib.sha256()
            with open(path, "rb") as source:
                for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                    digest.update(chunk)
            sha256 = digest.hexdigest()
        return path, path.stat().st_size, sha256, False
    digest = hashlib.sha256()
    handle, name = tempfile.mkstemp(dir=settings.FILE_UPLOAD_TEMP_DIR, suffix=".upload")
    size = 0
    try:
        with os.fdopen(handle, "wb") as target:
            chunks = upload.chunks() if upload is not None else [content or b""]
            for chunk in chunks:
                digest.update(chunk)
                target.write(chunk)
                size += len(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), size, digest.hexdigest(), True


class IncompleteBody(OSError):
    """The client stopped sending before the body reached its Content-Length (Django reports it as an
    UnreadablePostError, answered 400)."""


class WholeBodyInput:
    """A request's wsgi.input that raises `IncompleteBody` when it ends before `length` bytes."""

    def __init__(self, stream, length: int):
        self._stream = stream
        self._remaining = length

    def read(self, size: int | None = -1) -> bytes:
        """Exactly `size` bytes (all that is left when fewer): callers such as Django's `request.body`
        read once and take what comes back for the whole body."""
        wanted = self._wanted(size)
        data = self._stream.read(wanted) if wanted else b""
        while len(data) < wanted:
            more = self._stream.read(wanted - len(data))
            if not more:
                self._ended(len(data))
            data += more
        self._remaining -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        wanted = self._wanted(size)
        line = self._stream.readline(wanted) if wanted else b""
        if wanted and not line:
            self._ended(0)
        self._remaining -= len(line)
        return line

    def _wanted(self, size: int | None) -> int:
        return self._remaining if size is None or size < 0 else min(size, self._remaining)

    def _ended(self, received: int) -> None:
        missing = self._remaining - received
        raise IncompleteBody(f"The request body ended {missing} bytes before its Content-Length.")


class WholeBodies:
    """WSGI middleware: a request body is read whole or not at all, and staged parts die with their request.

    - Django's own input stream ends quietly when a client hangs up mid-body, so a multipart or form body
      cut after its last complete field would be parsed as if whole (an upload stored with the flags that
      never arrived left at their defaults). Here reading past the end the client sent raises instead.
    - A body without Content-Length (`Transfer-Encoding: chunked`) is never read by Django; it would be
      taken for an empty body. It is refused with 411, so the client learns why.
    - Multipart parts staged in FILE_UPLOAD_TEMP_DIR are closed, so removed, when the request is done,
      including a part that was half-written when the body was refused or cut.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0 and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return _length_required(environ, start_response)
        if length > 0:
            environ["wsgi.input"] = WholeBodyInput(environ["wsgi.input"], length)
        try:
            return self.app(environ, start_response)
        finally:
            for part in environ.pop(STAGED_PARTS, ()):
                part.close()


def _length_required(environ, start_response):
    """411 in the node's error shape, counted and logged as Django's middleware would have."""
    started = perf_counter()
    body = orjson.dumps({"error": "Send the request body with a Content-Length header (chunked bodies are not read)."})
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *SECURITY_HEADERS]
    start_response("411 Length Required", headers)
    path = environ.get("PATH_INFO", "")
    try:
        match = resolve(path)
        endpoint, model_id = match.view_name, match.kwargs.get("model_id")
    except Resolver404:
        endpoint, model_id = "unmatched", None
    try:
        observe_request(
            method=environ.get("REQUEST_METHOD", ""),
            path=path,
            endpoint=endpoint,
            status=411,
            seconds=perf_counter() - started,
            model_id=model_id,
        )
    except Exception:  # telemetry never fails a request that was answered
        logger.exception("recording request metrics failed")
    return [body]
