"""Uploads: multipart parts read in large chunks and hashed while written, and staged for storage.

A 1 GiB model arrives in 1 MiB chunks instead of Django's 64 KiB (a sixteenth of the parsing rounds),
and its sha256 is known when the part is complete, so storing it needs no second pass over the file.
"""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler

CHUNK_SIZE = 1024 * 1024


class HashingMemoryFileUploadHandler(MemoryFileUploadHandler):
    """Small parts stay in memory, as Django's default; hashed later from memory."""

    chunk_size = CHUNK_SIZE


class HashingTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Large parts go to a temporary file in FILE_UPLOAD_TEMP_DIR, hashed on the way."""

    chunk_size = CHUNK_SIZE

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data, start):
        self._digest.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.sha256 = self._digest.hexdigest()
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
