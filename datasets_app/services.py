"""Every write and every rule about datasets; the API views, the admin and `load_datasets` all call these."""

import contextlib
import io
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import torch
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import StrIndex
from django.db.models.lookups import GreaterThan

from datasets_app.models import TAG_MAX_LENGTH, Dataset, Tag
from gridnode.auth import authenticated_or_none
from gridnode.errors import BadRequest, Conflict, Forbidden, NotFound
from gridnode.storedfiles import Staged, stage, store
from gridnode.tensors import dump_tensors, tensor_from_json
from gridnode.ziplimits import check_zip, is_zip

DESCRIPTION_MAX_LENGTH = 10_000
SEARCH_MAX_TERMS = 100
NOT_FOUND = "Dataset not found."
NOT_ALLOWED_TO_DOWNLOAD = "You're not allowed to download this dataset."
Tagging = Dataset.tags.through


@dataclass
class StagedTensor(Staged):
    """An uploaded tensor in the staging folder, checked to be one tensor, not yet stored under a dataset id."""

    shape: list[int]
    dtype: str


def _unstorable(text: str) -> bool:
    """Whether text holds characters no column here may hold: NUL (refused by PostgreSQL) or lone surrogates."""
    return "\x00" in text or any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def _has_control_characters(text: str) -> bool:
    return _unstorable(text) or any(unicodedata.category(char) == "Cc" for char in text)


def tags_check(*, tags) -> list[str]:
    """The distinct tags of one dataset in code-point order, or a 400 naming the rule broken."""
    if tags is None:
        return []
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        raise BadRequest("'tags' must be a list of strings.")
    names = list(dict.fromkeys(tags))
    limit = settings.GRIDNODE_MAX_TAGS_PER_DATASET
    if len(names) > limit:
        raise BadRequest(f"A dataset takes at most {limit} distinct tags; this one has {len(names)}.")
    for position, name in enumerate(names, start=1):
        if not 1 <= len(name) <= TAG_MAX_LENGTH:
            raise BadRequest(f"Tags are 1-{TAG_MAX_LENGTH} characters long; tag {position} is {len(name)}.")
        if _has_control_characters(name):
            raise BadRequest(f"Tags must not contain control characters; tag {position} does.")
    return sorted(names)


def description_check(*, description) -> str:
    """A dataset description (empty when absent), or a 400."""
    if description is None:
        return ""
    if not isinstance(description, str):
        raise BadRequest("'description' must be text.")
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise BadRequest(f"'description' is longer than {DESCRIPTION_MAX_LENGTH} characters.")
    if _unstorable(description):
        raise BadRequest("'description' must not contain NUL characters or lone surrogates.")
    return description


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as clients write it: `float32`, not `torch.float32`."""
    return str(dtype).removeprefix("torch.")


# The dtypes a tensor sent as a JSON array may ask for; JSON itself carries none.
JSON_DTYPES = {
    dtype_name(dtype): dtype
    for dtype in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
    )
}


def dtype_check(*, dtype) -> str | None:
    """A `dtype` field as a canonical torch dtype name (None when absent), or a 400."""
    if dtype is None or dtype == "":
        return None
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else ""
    if not name.isidentifier() or not isinstance(getattr(torch, name, None), torch.dtype):
        raise BadRequest("'dtype' must be a torch dtype such as float32 or int64.")
    return dtype_name(getattr(torch, name))


def tensor_stage_json(*, value, dtype: str | None) -> StagedTensor:
    """Stage a tensor sent as a (nested) JSON array of numbers, as `dtype` (float32 by default)."""
    target = JSON_DTYPES.get(dtype or "float32")
    if target is None:
        raise BadRequest(f"'data' as a JSON array takes a 'dtype' among {', '.join(JSON_DTYPES)}.")
    tensor = tensor_from_json(value, "data", target)
    if not target.is_floating_point and torch.tensor(value).is_floating_point():
        # torch would truncate 1.5 to 1 without a word.
        raise BadRequest(f"'data' holds numbers with a fraction, which {dtype} cannot hold.")
    return tensor_stage(content=dump_tensors(tensor))


def tensor_stage(*, upload=None, content: bytes | None = None, dtype: str | None = None) -> StagedTensor:
    """Check an uploaded tensor (a multipart file or `torch.save` bytes) and stage it on disk.

    A `dtype`, when given, must be the tensor's.
    """
    staged = stage(
        upload=upload, content=content, field="data", noun="dataset", limit=settings.GRIDNODE_MAX_DATASET_BYTES
    )
    with staged.discarded_on_error():
        tensor = _load_one_tensor(staged.path)
        shape, actual = list(tensor.shape), dtype_name(tensor.dtype)
        del tensor  # releases the memory map before the file is moved into storage
        if dtype is not None and dtype != actual:
            raise BadRequest(f"'dtype' says {dtype} but the tensor is {actual}.")
    return StagedTensor(**vars(staged), shape=shape, dtype=actual)


def _load_one_tensor(source: Path | IO[bytes]) -> torch.Tensor:
    """The single dense CPU tensor in a `torch.save` file, never unpickling arbitrary objects."""
    _check_packing(source)
    try:
        try:
            # A memory map checks a large tensor without reading it all into memory.
            value = torch.load(source, weights_only=True, map_location="cpu", mmap=isinstance(source, Path))
        except RuntimeError:
            # Files from torch < 1.6 (the legacy format PyGrid-era clients wrote) cannot be memory-mapped.
            if isinstance(source, io.IOBase):
                raise
            value = torch.load(source, weights_only=True, map_location="cpu")
    except Exception:
        raise BadRequest("'data' is not a tensor saved with torch.save (or it holds other objects).") from None
    if isinstance(value, list | tuple | dict):
        raise BadRequest("'data' must hold one tensor, not a collection of tensors.")
    if not isinstance(value, torch.Tensor):
        raise BadRequest("'data' must hold a tensor.")
    if value.layout != torch.strided or value.device.type != "cpu":
        raise BadRequest("'data' must hold a dense tensor with data (not sparse, not on the meta device).")
    return value


def _check_packing(source: Path | IO[bytes]) -> None:
    """A 400 for a zip whose directory declares more than a dataset may hold: torch.load allocates it
    (a memory map cannot serve a deflated entry, so even a file on disk would be read whole)."""
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as file:
        if is_zip(file):
            check_zip(file, what="'data'", max_unpacked_bytes=settings.GRIDNODE_MAX_DATASET_BYTES)


def dataset_id_available(*, dataset_id: str) -> None:
    """A 409 when the id is taken; checked early so a duplicate upload is not staged for nothing."""
    if Dataset.objects.filter(dataset_id=dataset_id).exists():
        raise Conflict(f"Dataset with id: {dataset_id} already exists.")


def _attach_tags(dataset: Dataset, names: list[str]) -> None:
    """Link a saved dataset to its tags, creating the tags no dataset had before."""
    if not names:
        return
    # ON CONFLICT DO NOTHING: concurrent uploads with a new tag both end up linked to one row.
    Tag.objects.bulk_create([Tag(name=name) for name in names], ignore_conflicts=True)
    tag_ids = Tag.objects.filter(name__in=names).values_list("pk", flat=True)
    Tagging.objects.bulk_create([Tagging(dataset_id=dataset.pk, tag_id=tag_id) for tag_id in tag_ids])


def dataset_create(
    *,
    dataset_id: str | None,
    tags: list[str],
    description: str,
    allow_download: bool,
    staged: StagedTensor,
    uploaded_by: AbstractBaseUser | None = None,
) -> Dataset:
    """Store a staged tensor as a new dataset; the unique constraint settles concurrent uploads.

    `uploaded_by` is the authenticated user who sent it (None, or an anonymous user, records nobody).

    Without an id the dataset gets a fresh uuid4 (its canonical text, which follows the id rules).
    """
    dataset_id = dataset_id or str(uuid.uuid4())
    return store(
        staged,
        folder="datasets",
        suffix=".pt",
        available=lambda: dataset_id_available(dataset_id=dataset_id),
        taken=lambda: Conflict(f"Dataset with id: {dataset_id} already exists."),
        row=lambda name: Dataset(
            dataset_id=dataset_id,
            description=description,
            shape=staged.shape,
            dtype=staged.dtype,
            data=name,
            size=staged.size,
            sha256=staged.sha256,
            allow_download=allow_download,
            uploaded_by=authenticated_or_none(uploaded_by),
        ),
        with_row=lambda dataset: _attach_tags(dataset, tags),
    )


def dataset_set_tags(*, dataset: Dataset, tags: list[str]) -> None:
    """Replace a dataset's tags with an already checked list (see `tags_check`)."""
    with transaction.atomic():
        Tagging.objects.filter(dataset_id=dataset.pk).exclude(tag__name__in=tags).delete()
        kept = set(Tagging.objects.filter(dataset_id=dataset.pk).values_list("tag__name", flat=True))
        _attach_tags(dataset, [name for name in tags if name not in kept])


def dataset_delete(*, dataset_id: str) -> None:
    """Delete a dataset; its tensor file goes once the deletion commits (gridnode/storedfiles.py)."""
    with transaction.atomic():
        deleted, _ = Dataset.objects.filter(dataset_id=dataset_id).delete()
    if not deleted:
        raise NotFound(NOT_FOUND)


def dataset_get(*, dataset_id: str) -> Dataset:
    """A dataset with its tags, or a 404."""
    try:
        return Dataset.objects.prefetch_related("tags").get(dataset_id=dataset_id)
    except Dataset.DoesNotExist:
        raise NotFound(NOT_FOUND) from None


def dataset_list(*, tags: Iterable[str] = ()) -> QuerySet[Dataset]:
    """Every dataset carrying all of the given tags (every dataset when none), oldest first."""
    datasets = Dataset.objects.prefetch_related("tags")
    names = list(dict.fromkeys(tags))
    if any(_unstorable(name) for name in names):
        # No tag holds these characters, and the database would refuse the query (as in datasets_search).
        return datasets.none()
    if names:
        # One grouped subquery however many tags are asked for, not one join per tag.
        carrying_all = (
            Tagging.objects.filter(tag__name__in=names)
            .values("dataset_id")
            .annotate(matched=Count("tag_id"))
            .filter(matched=len(names))  # type: ignore[misc]  # django-stubs misses an annotate() after values()
            .values("dataset_id")
        )
        datasets = datasets.filter(pk__in=carrying_all)
    return datasets


def dataset_for_download(*, dataset_id: str) -> Dataset:
    """A dataset whose owner allows downloads, or a 404/403."""
    dataset = dataset_get(dataset_id=dataset_id)
    if not dataset.allow_download:
        raise Forbidden(NOT_ALLOWED_TO_DOWNLOAD)
    return dataset


def dataset_tensor(*, dataset: Dataset) -> torch.Tensor:
    """The stored tensor of a dataset, memory-mapped when the storage is a local disk."""
    source: Path | IO[bytes]
    try:
        source = Path(default_storage.path(cast(str, dataset.data.name)))  # a stored dataset has its file
    except NotImplementedError:
        source = io.BytesIO(dataset.read_stored())
    if isinstance(source, Path) and not source.exists():
        raise NotFound(NOT_FOUND)
    return _load_one_tensor(source)


def tag_names_in_use() -> list[str]:
    """Every tag that at least one dataset carries, in code-point order.

    Tag rows outlive their last dataset (removing them would race with uploads reusing them), so
    the ones no dataset carries any more are filtered out here.
    """
    names = Tag.objects.filter(Exists(Tagging.objects.filter(tag_id=OuterRef("pk")))).values_list("name", flat=True)
    return sorted(names)


def _description_contains(term: str):
    """A case-sensitive substring condition on the description, indexable where the database allows."""
    if connection.vendor == "postgresql":
        # LIKE '%term%' (escaped by Django) is what the trigram index of migration 0002 serves.
        return Q(description__contains=term)
    # SQLite's LIKE ignores ASCII case; instr() does not.
    return GreaterThan(StrIndex("description", Value(term)), 0)


def _datasets_matching(term: str) -> QuerySet:
    """Primary keys of the datasets that a search term matches: by tag, by id, or in the description."""
    # order_by() drops Meta.ordering, which a compound SELECT's parts may not have.
    by_tag = Tagging.objects.filter(tag__name=term).order_by().values("dataset_id")
    by_id = Dataset.objects.filter(dataset_id=term).order_by().values("pk")
    by_description = Dataset.objects.filter(_description_contains(term)).order_by().values("pk")
    return by_tag.union(by_id, by_description)


def datasets_search(*, terms: list[str]) -> bool:
    """Whether one dataset matches every term, in one query: EXISTS over the intersection of each
    term's matches, each an indexed lookup (tag name, dataset id, trigram LIKE on PostgreSQL).

    Each term's matches are computed whole (UNION and INTERSECT need all their rows), which keeps
    PostgreSQL on its indexes: a LIMIT-driven plan would scan the table whenever a term matches
    nothing. The cost is that a term found in most descriptions, or one too short for trigrams
    (under 3 characters), is a scan; see bench/datasets_search.py.
    """
    distinct = list(dict.fromkeys(terms))
    if len(distinct) > SEARCH_MAX_TERMS:
        raise BadRequest(f"A search takes at most {SEARCH_MAX_TERMS} distinct terms.")
    if any(_unstorable(term) for term in distinct):
        # No tag, id or description holds these characters, and the database would refuse the query.
        return False
    first, *others = (_datasets_matching(term) for term in distinct)
    return (first.intersection(*others) if others else first).exists()


def dataset_file_names() -> dict[str, str]:
    """The storage name of every dataset's tensor file, with its dataset id (for `manage.py storage_check`)."""
    return dict(Dataset.objects.order_by().values_list("data", "dataset_id"))
