"""Rows that own one stored file: how the file is staged, stored with its row, read, and removed with it.

Hosted models (models_app), datasets (datasets_app) and encrypted-model parts (smpc_app) each keep one
file in Django's default storage per row, and follow one lifecycle, written here once:

1. `stage` puts the upload in the staging folder, hashed on the way, and refuses an empty or too large one;
   the app checks what it holds (`Staged.discarded_on_error`).
2. `store` moves it into storage under a fresh name and inserts its row; if either fails, neither stays
   (a taken id is the app's 409).
3. `StoredFileRow.open_stored` reads it back; a file deleted since its row was read is the app's 404, as if
   the request had come a moment later.
4. Deleting the row, by any path (API, admin, shell, cascade), removes the file once the deletion commits,
   and what this process loaded from it (`StoredFileRow.forget_loaded`).

The storage is Django's default: local disk, or an S3-compatible object store (gridnode/objectstore.py),
where step 2 is a multipart upload from the staged file, step 3 a stream, and step 4 also removes this
replica's local copy of the file.
"""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from gridnode.errors import BadRequest, NotFound, PayloadTooLarge
from gridnode.uploads import StagedFile, stage_to_disk


@dataclass
class Staged:
    """An upload in the staging folder, not yet stored under an id."""

    path: Path
    size: int
    sha256: str
    owned: bool  # whether the node made this file (and so removes it) or Django's upload handler did

    def discard(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)

    @contextmanager
    def discarded_on_error(self) -> Iterator[None]:
        """Run the app's checks of the staged file; whatever they raise, the file does not stay behind."""
        try:
            yield
        except BaseException:
            self.discard()
            raise


def too_large(noun: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The {noun} is larger than this node accepts ({limit} bytes).")


def stage(*, upload=None, content: bytes | None = None, field: str, noun: str, limit: int) -> Staged:
    """Stage a multipart file part (`upload`) or decoded bytes (`content`) sent as `field`, at most `limit`
    bytes (413 naming the `noun`); an empty one is a 400."""
    staged = Staged(*stage_to_disk(upload=upload, content=content))
    with staged.discarded_on_error():
        if staged.size == 0:
            raise BadRequest(f"'{field}' is empty.")
        if staged.size > limit:
            raise too_large(noun, limit)
    return staged


Row = TypeVar("Row", bound=models.Model)


def store(
    staged: Staged,
    *,
    folder: str,
    suffix: str,
    row: Callable[[str], Row],
    taken: Callable[[], Exception | None],
    available: Callable[[], None] = lambda: None,
    with_row: Callable[[Row], None] = lambda _: None,
    clean: Callable[[Row], None] = lambda row: row.full_clean(validate_unique=False, validate_constraints=False),
) -> Row:
    """Move a staged file into storage under a fresh name (`<folder>/<uuid><suffix>`) and insert the row
    `row(stored_name)` makes, with whatever `with_row` adds in the same transaction.

    `available()` runs first and refuses a taken id before anything is stored; the unique constraint
    settles concurrent uploads, answered `taken()` (None when the insert failed for another reason: that
    IntegrityError is raised as it is). `clean(row)` checks the row's own rules before the insert: by
    default full_clean, leaving uniqueness and constraints to the database. On any failure neither the
    file nor the row stays, and the staged file is gone either way.
    """
    try:
        available()
        with StagedFile(staged.path) as staged_file:
            stored = default_storage.save(f"{folder}/{uuid.uuid4().hex}{suffix}", staged_file)
    finally:
        staged.discard()
    instance = row(stored)
    try:
        clean(instance)
        with transaction.atomic():
            instance.save()
            with_row(instance)
    except IntegrityError:
        default_storage.delete(stored)
        answer = taken()
        if answer is None:
            raise
        raise answer from None
    except BaseException:
        default_storage.delete(stored)
        raise
    return instance


class StoredFileRow(models.Model):
    """A row that owns the file in its `file_field`; the file is removed when the row is deleted."""

    file_field: ClassVar[str]
    not_found: ClassVar[str]  # the 404's text when the file has gone with a concurrent deletion

    class Meta:
        abstract = True

    @property
    def stored_name(self) -> str:
        return getattr(self, self.file_field).name

    def open_stored(self) -> File:
        """The stored file, open for reading (the caller closes it), or the app's 404."""
        try:
            return default_storage.open(self.stored_name, "rb")
        except FileNotFoundError:
            raise NotFound(self.not_found) from None

    def read_stored(self) -> bytes:
        with self.open_stored() as stored:
            return stored.read()

    def forget_loaded(self) -> None:
        """Drop whatever this process keeps loaded from the file; called once the row's deletion has committed,
        just before the file is removed. Nothing by default: a row type with a per-process cache says what."""


@receiver(post_delete, dispatch_uid="gridnode.storedfiles.remove_file")
def _remove_file(sender, instance, **kwargs) -> None:
    """Remove a deleted row's file once the deletion has committed; a rolled-back delete keeps its file."""
    if isinstance(instance, StoredFileRow) and (name := instance.stored_name):
        storage = getattr(instance, instance.file_field).storage

        def remove() -> None:
            instance.forget_loaded()
            storage.delete(name)

        transaction.on_commit(remove)
        if getattr(storage, "keeps_local_copies", False):  # the object store (gridnode/objectstore.py)
            from gridnode.objectstore import remove_copies_of

            transaction.on_commit(lambda: remove_copies_of(name))
