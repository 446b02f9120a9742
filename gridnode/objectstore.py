"""Stored files on an S3-compatible object store (GRIDNODE_STORAGE=s3, docs/deployment.md), and each
replica's local copies of what its inference processes load.

The store is django-storages' S3 backend (boto3) with three changes, each to keep a large file's memory
bounded:

- saving a staged upload sends the file from disk as a multipart upload, part by part (boto3's transfer
  manager reads each part from the file when it sends it); a failed upload is aborted, so no object and
  no half-written part stays (a process killed mid-upload leaves an unfinished multipart upload, which
  holds no object: `manage.py storage_check` finds and aborts it);
- opening a file for reading answers a stream (ranged GETs behind a 1 MiB buffer) instead of the
  backend's own file, which first downloads the whole object into memory;
- connections time out instead of hanging, and retries are few, so /readyz answers when the store is gone.

An inference process loads an archive from a local file (torch wants one), so a replica keeps local copies
under its own GRIDNODE_DATA_DIR, named by the archive's identity (its storage name and sha256: a stored
name is never reused, so a copy never goes stale) and checked against the row's sha256 when fetched and
again before each load. Copies past GRIDNODE_ARCHIVE_CACHE_BYTES are removed, least recently used first.
"""

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal, cast

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.response import StreamingBody
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage, storages
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from gridnode.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# Multipart parts: boto3 keeps at most 10 of them in memory at once (s3transfer's
# max_in_memory_upload_chunks) when a part is read from a stream; from a file it reads each as it sends it.
PART_BYTES = 8 * 1024 * 1024


class DamagedCopy(Exception):
    """A stored file whose bytes do not hash to its row's sha256."""


class ObjectStorage(S3Storage):
    """django-storages' S3 storage with streamed reads, multipart uploads from disk and bounded waits."""

    keeps_local_copies = True  # of the archives inference processes load: removed with their row

    def get_default_settings(self):
        defaults = super().get_default_settings()
        defaults["client_config"] = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            # settings.py refuses any other style.
            s3={"addressing_style": cast(Literal["auto", "virtual", "path"], settings.GRIDNODE_S3_ADDRESSING_STYLE)},
        )
        from boto3.s3.transfer import TransferConfig

        defaults["transfer_config"] = TransferConfig(
            multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4, use_threads=True
        )
        return defaults

    @property
    def client(self):
        return self.connection.meta.client

    def key(self, name: str) -> str:
        """The object key of a storage name (under GRIDNODE_S3_PREFIX)."""
        return self._normalize_name(clean_name(name))

    def _save(self, name, content):
        path = getattr(content, "temporary_file_path", None)
        if path is None:
            return super()._save(name, content)
        # A staged upload: sent from its file, part by part (multipart past PART_BYTES).
        cleaned = clean_name(name)
        parameters = self._get_write_parameters(self.key(cleaned), content)
        try:
            self.bucket.Object(self.key(cleaned)).upload_file(path(), ExtraArgs=parameters, Config=self.transfer_config)
        except Exception as error:  # boto3 aborted the multipart upload: no object, no parts kept
            logger.warning("the object store refused %s: %s", cleaned, error)
            raise ServiceUnavailable(
                "The object store did not take the file, so nothing was stored; try again later."
            ) from error
        return cleaned

    def delete(self, name):
        """Remove a file; a store that does not answer leaves it as an orphan for storage_check, logged, rather
        than failing a deletion whose row has already gone."""
        try:
            super().delete(name)
        except (BotoCoreError, ClientError) as error:
            logger.warning("the object store kept %s (storage_check will find it): %s", name, error)

    def _open(self, name, mode="rb"):
        if mode != "rb":
            return super()._open(name, mode)
        key = self.key(name)
        try:
            head = self.client.head_object(Bucket=self.bucket_name, Key=key)
        except ClientError as error:
            if _status(error) == 404:
                raise FileNotFoundError(f"File does not exist: {name}") from None
            raise unavailable(error) from error
        except BotoCoreError as error:  # no answer: refused, timed out, no credentials
            raise unavailable(error) from error
        reader = ObjectReader(self.client, self.bucket_name, key, head["ContentLength"], head.get("ETag"))
        return File(io.BufferedReader(reader, CHUNK), name=name)

    def pending_uploads(self):
        """Multipart uploads under this storage's prefix begun and neither completed nor aborted:
        (key, upload id, when it began)."""
        prefix = self.location.rstrip("/") + "/" if self.location else ""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket_name, Prefix=prefix)
        for page in pages:
            for upload in page.get("Uploads", ()):
                yield upload["Key"], upload["UploadId"], upload["Initiated"]

    def abort_upload(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError):
            self.client.abort_multipart_upload(Bucket=self.bucket_name, Key=key, UploadId=upload_id)


def unavailable(error: Exception) -> ServiceUnavailable:
    """The 503 for a store that does not answer as it should (the log says how)."""
    logger.warning("the object store failed: %s: %s", type(error).__name__, error)
    return ServiceUnavailable("The object store did not answer; try again later.")


def _status(error: ClientError) -> int:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


class ObjectReader(io.RawIOBase):
    """One object read as a seekable file: a GET from the current position, opened at the first read after
    a seek, and read as it is consumed (never whole). The ETag pins the version first seen."""

    def __init__(self, client, bucket: str, key: str, size: int, etag: str | None):
        self._client, self._bucket, self._key, self._size, self._etag = client, bucket, key, size, etag
        self._position = 0
        self._body: StreamingBody | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = max(0, base + offset)
        if position != self._position:
            self._drop_body()
            self._position = position
        return position

    def readinto(self, buffer) -> int:
        if self._position >= self._size or len(buffer) == 0:
            return 0
        if self._body is None:
            extra = {"IfMatch": self._etag} if self._etag else {}
            try:
                answer = self._client.get_object(
                    Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-", **extra
                )
            except ClientError as error:
                if _status(error) in (404, 412):  # deleted, or replaced, since it was opened
                    raise FileNotFoundError(f"File does not exist: {self._key}") from None
                raise
            self._body = answer["Body"]
        data = self._body.read(len(buffer))
        if not data:
            raise OSError(f"The object store ended {self._key} at {self._position} of {self._size} bytes.")
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


def on_object_store() -> bool:
    """Whether the default storage is the object store (GRIDNODE_STORAGE=s3)."""
    return isinstance(storages["default"], ObjectStorage)


# --- Each replica's local copies ------------------------------------------------------------------------


def copies_folder() -> Path:
    return Path(settings.DATA_DIR) / "cache" / "stored"


def copy_path(name: str, sha256: str) -> Path:
    """Where this replica keeps its copy of the stored file `name` whose content hashes to `sha256`."""
    return copies_folder() / f"{sha256}-{name.replace('/', '-')}"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read through one buffer (no allocation per chunk)."""
    with open(path, "rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def local_copy(name: str, sha256: str) -> Path:
    """This replica's copy of the stored file `name`, fetched from the store (streamed, hashed on the way)
    when it has none; FileNotFoundError when the store has no such file, DamagedCopy when its bytes do not
    hash to `sha256`. Processes fetching the same file wait for the first one instead of fetching it too."""
    target = copy_path(name, sha256)
    if target.exists():
        with contextlib.suppress(OSError):
            os.utime(target)  # recently used: the last to be removed past the bound
        return target
    folder = copies_folder()
    folder.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        handle, partial = tempfile.mkstemp(dir=folder, prefix=".fetch-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as sink, default_storage.open(name, "rb") as source:
                for chunk in iter(lambda: source.read(CHUNK), b""):
                    digest.update(chunk)
                    sink.write(chunk)
            if digest.hexdigest() != sha256:
                raise DamagedCopy(f"{name} in the object store does not hash to its row's sha256.")
            os.replace(partial, target)
        except (BotoCoreError, ClientError) as error:  # the store stopped answering mid-way
            raise unavailable(error) from error
        finally:
            Path(partial).unlink(missing_ok=True)
    trim_copies(keep=target)
    return target


def trim_copies(keep: Path | None = None) -> None:
    """Remove the least recently used copies until they hold at most GRIDNODE_ARCHIVE_CACHE_BYTES."""
    entries = []
    for path in copies_folder().glob("*"):
        if path.name.startswith(".") or path.suffix == ".lock":
            continue
        with contextlib.suppress(FileNotFoundError):
            status = path.stat()
            entries.append((status.st_mtime, status.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda entry: entry[0]):
        if total <= settings.GRIDNODE_ARCHIVE_CACHE_BYTES:
            break
        if path == keep:
            continue
        remove_copy(path)
        total -= size


def remove_copy(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".lock").unlink(missing_ok=True)


def remove_copies_of(name: str) -> None:
    """Remove this replica's copies of the stored file `name` (its row was deleted)."""
    folder = copies_folder()
    if folder.is_dir():
        for path in folder.glob(f"*-{name.replace('/', '-')}"):
            remove_copy(path)


def local_copies() -> list[Path]:
    """Every complete copy this replica keeps."""
    folder = copies_folder()
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if not path.name.startswith(".") and path.suffix != ".lock")


def partial_fetches() -> list[Path]:
    """Fetches in progress, or left behind by a process killed while fetching."""
    folder = copies_folder()
    return sorted(folder.glob(".fetch-*")) if folder.is_dir() else []
