"""`manage.py storage_check [--delete]`: stored files no row claims, stale staged uploads, rows without a file.

It lives with the wiring, not in an app: the storage (MEDIA_ROOT) and the staging folder
(FILE_UPLOAD_TEMP_DIR) are shared by every app, and a file is an orphan only when no app claims it, so
only a node-wide look can say so. Each app answers for its own rows through a service function.

An upload writes its file into storage a moment before its row commits, and a large archive may be
checked for up to GRIDNODE_LOAD_TIMEOUT seconds after it was staged, so files younger than `--min-age`
are never judged. Files are listed before rows are read, so a row committed meanwhile still counts.

On the object store (GRIDNODE_STORAGE=s3) it also looks at multipart uploads left unfinished (a process
killed mid-upload: no object, but parts the store keeps) and at this replica's local copies of stored
archives whose row is gone (gridnode/objectstore.py); run it on each replica for the copies.
"""

import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage, storages
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from datasets_app.services import dataset_file_names
from gridnode.objectstore import (
    ObjectStorage,
    copy_path,
    local_copies,
    on_object_store,
    partial_fetches,
    remove_copy,
)
from models_app.services import model_archive_names
from smpc_app.shares import share_file_names


def stored_owners() -> dict[str, str]:
    """Every storage name some row refers to, with what that row is ("model 'x'", "dataset 'y'", "share of 'z'")."""
    owners = {name: f"model {model_id!r}" for name, model_id in model_archive_names().items()}
    owners.update({name: f"dataset {dataset_id!r}" for name, dataset_id in dataset_file_names().items()})
    owners.update({name: f"share of {model_id!r}" for name, model_id in share_file_names().items()})
    return owners


def stored_names(folder: str = ""):
    """Every file name in the default storage, walked from `folder`."""
    try:
        folders, files = default_storage.listdir(folder)
    except FileNotFoundError:  # a node that has stored nothing yet
        return
    for name in files:
        yield f"{folder}/{name}" if folder else name
    for child in folders:
        yield from stored_names(f"{folder}/{child}" if folder else child)


def describe(size: int, age: timedelta) -> str:
    return f"{size:,} bytes, {age.total_seconds() / 3600:.1f} h old"


class Command(BaseCommand):
    help = (
        "Find files in storage that no model, dataset or share row refers to, staged uploads left in the "
        "staging folder, and rows whose file is missing. With --delete, remove the files found (rows are "
        "never touched). Exits 1 while anything found remains."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--delete", action="store_true", help="Remove the orphan files and stale staged uploads found."
        )
        parser.add_argument(
            "--min-age",
            type=int,
            default=3600,
            metavar="SECONDS",
            help="Judge only files at least this old (default 3600): a younger one may be an upload in progress.",
        )

    def handle(self, *args, delete: bool, min_age: int, **options):
        if min_age < 0:
            raise CommandError("--min-age must be 0 or more seconds.")
        self.delete, self.min_age = delete, timedelta(seconds=min_age)
        listed = list(stored_names())  # before the rows are read: see the module's docstring
        owners = stored_owners()
        orphans, young = self._orphans(listed, owners)
        stale = self._stale_staged_uploads()
        missing = self._rows_without_file(set(listed), owners)

        verb = "removed" if delete else "found"
        self.stdout.write(
            f"Checked {len(listed)} stored files against {len(owners)} rows, and the staging folder: "
            f"{orphans} orphan files {verb}, {stale} stale staged uploads {verb}, {missing} rows without their "
            f"file; {young} files younger than {min_age} s left alone."
        )
        remaining = missing + (0 if delete else orphans + stale)
        if on_object_store():
            unfinished = self._unfinished_uploads()
            copies = self._unclaimed_copies(owners)
            self.stdout.write(
                f"Object store: {unfinished} unfinished multipart uploads {'aborted' if delete else 'found'}, "
                f"{copies} local copies of files no row refers to {verb}."
            )
            remaining += 0 if delete else unfinished + copies
        if remaining:
            advice = "" if delete else " (--delete removes the files)"
            if missing:
                advice += "; a row without its file needs an operator: delete that model or dataset, or restore it"
            raise CommandError(f"{remaining} problems{advice}.")

    def _orphans(self, listed: list[str], owners: dict[str, str]) -> tuple[int, int]:
        """Report (and with --delete remove) stored files no row refers to: (judged orphans, too young)."""
        orphans = young = 0
        now = timezone.now()
        for name in listed:
            if name in owners:
                continue
            try:
                age = now - default_storage.get_modified_time(name)
                size = default_storage.size(name)
            except FileNotFoundError:  # removed meanwhile (a deletion committing)
                continue
            if age < self.min_age:
                young += 1
                continue
            orphans += 1
            self._found(
                f"Orphan file {name} ({describe(size, age)}): no row refers to it", default_storage.delete, name
            )
        return orphans, young

    def _stale_staged_uploads(self) -> int:
        """Report (and with --delete remove) files in the staging folder older than --min-age.

        The node keeps a staged upload only while its request runs, so an old one is what a process
        killed mid-upload left behind.
        """
        stale = 0
        folder = Path(settings.FILE_UPLOAD_TEMP_DIR)
        if not folder.is_dir():
            return 0
        now = time.time()
        for path in sorted(folder.iterdir()):
            try:
                status = path.stat()
            except FileNotFoundError:  # its request just ended
                continue
            age = timedelta(seconds=now - status.st_mtime)
            if not path.is_file() or age < self.min_age:
                continue
            stale += 1
            self._found(f"Stale staged upload {path} ({describe(status.st_size, age)})", _unlink, path)
        return stale

    def _rows_without_file(self, listed: set[str], owners: dict[str, str]) -> int:
        """Report rows whose file is not in storage (never changed: which copy is right is the operator's call)."""
        absent = [name for name in owners if name not in listed and not default_storage.exists(name)]
        if absent:
            # A row deleted meanwhile takes its file with it; only rows still there are missing their file.
            still = stored_owners()
            absent = [name for name in absent if still.get(name) == owners[name]]
        for name in absent:
            self.stdout.write(f"Missing file for {owners[name]}: {name}")
        return len(absent)

    def _unfinished_uploads(self) -> int:
        """Report (and with --delete abort) multipart uploads begun before --min-age and never completed."""
        storage = storages["default"]
        assert isinstance(storage, ObjectStorage)  # called only when on_object_store()
        now, count = timezone.now(), 0
        for key, upload_id, initiated in storage.pending_uploads():
            age = now - initiated
            if age < self.min_age:
                continue
            count += 1
            line = f"Unfinished multipart upload of {key} ({age.total_seconds() / 3600:.1f} h old)"
            self._found(line, lambda target: storage.abort_upload(*target), (key, upload_id))
        return count

    def _unclaimed_copies(self, owners: dict[str, str]) -> int:
        """Report (and with --delete remove) this replica's local copies whose stored file no row claims."""
        claimed = {copy_path(name, "").name for name in owners}  # "-<name>": a copy's name past its sha256
        count = 0
        for path in local_copies():
            if path.name[64:] in claimed:
                continue
            count += 1
            size = path.stat().st_size if path.exists() else 0
            self._found(f"Local copy {path} ({size:,} bytes): no row refers to its file", remove_copy, path)
        now = time.time()
        for path in partial_fetches():  # a process killed while fetching a copy
            try:
                status = path.stat()
            except FileNotFoundError:
                continue
            if timedelta(seconds=now - status.st_mtime) < self.min_age:
                continue
            count += 1
            self._found(f"Local copy {path} ({status.st_size:,} bytes): a fetch that never finished", _unlink, path)
        return count

    def _found(self, line: str, remove, target) -> None:
        if self.delete:
            remove(target)
            line += ": removed"
        self.stdout.write(line)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
