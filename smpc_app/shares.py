"""This node's part of a secret-shared model: stored, shown, downloaded, deleted, and loaded to run.

A part is `torch.save` bytes of a dict of named int64 tensors (`smpc_protocol.hosting`): a worker's share
(party 0 or 1) or the crypto provider's weight masks. It is kept like a hosted model's archive, by the
stored-file lifecycle of `gridnode.storedfiles`: a uuid file under `shares/` in the default storage, its
size and sha256 beside it, stored with its row or not at all, and removed once the row's deletion commits
(here, with its registration, or in the admin), when this process's loaded copy goes too
(`ModelShare.forget_loaded`).

Parts come from clients, so they are read only with `torch.load(..., weights_only=True)` after the zip
checks, and they must be exactly the tensors the model's spec needs for the part's role.
"""

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import orjson
import torch
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction

from gridnode.auth import authenticated_or_none
from gridnode.cache import ArchiveCache
from gridnode.errors import BadRequest, Conflict, Forbidden, NotFound
from gridnode.http import OBJECT_ID_RE
from gridnode.storedfiles import Staged, stage, store
from gridnode.ziplimits import check_zip, is_zip
from smpc_app.models import EncryptedModel, ModelShare
from smpc_app.registrations import REGISTRATION_NOT_FOUND
from smpc_protocol.hosting import check_part, expected_part_shapes
from smpc_protocol.spec import ModelSpec, SpecError

SHARE_NOT_FOUND = ModelShare.not_found
NOT_ALLOWED_TO_INFER = "Remote inference is not allowed for this encrypted model."
NOT_ALLOWED_TO_DOWNLOAD = "You're not allowed to download this encrypted model's share."
NEVER_DOWNLOADABLE = (
    "'allow_download' cannot be true for an encrypted model's part: any two of a model's parts rebuild its "
    "weights, so no part is ever handed out again (the owner keeps the model itself)."
)
# The keys of `ModelSpec.to_json()`: checked here because SpecError would name unknown keys, and an error
# never echoes the payload.
SPEC_KEYS = ("version", "input_shape", "layers")
# Beside the tensors' own bytes, a part's zip holds the pickle, torch's small records and padding.
PART_OVERHEAD_BYTES = 1024 * 1024
_PART_OF: dict[str, str] = {
    ModelShare.Role.WORKER: "a worker's",
    ModelShare.Role.CRYPTO_PROVIDER: "the crypto provider's",
}

Part = dict[str, torch.Tensor]


# Loaded parts with their specs, keyed by (model_id, archive name): see `gridnode.cache`.
part_cache: ArchiveCache[tuple[ModelSpec, Part]] = ArchiveCache(settings.GRIDNODE_MODEL_CACHE_SIZE)


@dataclass
class StagedShare(Staged):
    """An uploaded part in the staging folder, checked against its role and spec, not yet stored under a model."""

    role: str
    party: int | None
    spec: ModelSpec


def share_download_check(allow_download: bool | None) -> None:
    """A 400 when asked to make a part downloadable: whoever could fetch two parts would hold the model."""
    if allow_download:
        raise BadRequest(NEVER_DOWNLOADABLE)


def share_role_check(*, role, party) -> tuple[str, int | None]:
    """A part's role and party, or a 400: a worker is party 0 or 1 of the protocol, the crypto provider none."""
    if not isinstance(role, str) or role not in ModelShare.Role.values:
        raise BadRequest("'role' must be worker or crypto_provider.")
    if role == ModelShare.Role.WORKER:
        if party is None:
            raise BadRequest("'party' is required for a worker: 0 or 1.")
        if isinstance(party, bool) or party not in (0, 1):
            raise BadRequest("'party' must be 0 or 1.")
    elif party is not None:
        raise BadRequest("'party' is for workers only: leave it out for the crypto provider.")
    return role, party


def share_spec_check(*, spec_json) -> ModelSpec:
    """The model's spec as a client sent it (a JSON object, or its text in a form), or a 400 saying why not."""
    if spec_json is None or spec_json == "":
        raise BadRequest("'spec' is required: the model's spec (ModelSpec.to_json()) as a JSON object.")
    value = spec_json
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadRequest("'spec' is not JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("'spec' must be a JSON object.")
    if not set(value) <= set(SPEC_KEYS):
        raise BadRequest(f"'spec' has keys other than {', '.join(SPEC_KEYS)}.")
    try:
        return ModelSpec.from_json(value)
    except SpecError as exc:
        raise BadRequest(f"'spec' is not a model the protocol runs: {exc}.") from None


def _load_part(source: Path | io.BytesIO, *, spec: ModelSpec, role: str) -> Part:
    """The tensors of a stored or staged part, checked to be exactly those `spec` needs for `role`.

    Only zip files (what torch.save has written since torch 1.6) are read: the older format makes
    torch allocate whatever sizes its pickle declares before any check could see them. A file on disk
    is memory-mapped, so checking a large part does not read it into memory.
    """
    expected = expected_part_shapes(spec, role)
    needed = sum(8 * math.prod(shape) for shape in expected.values())
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as file:
        if not is_zip(file):
            raise BadRequest("'share' is not a torch.save file (a zip archive, as torch has written since 1.6).")
        # torch.load allocates what the zip directory declares: no more than the spec's tensors need.
        check_zip(file, what="'share'", max_unpacked_bytes=needed + PART_OVERHEAD_BYTES)
    try:
        part = torch.load(source, weights_only=True, map_location="cpu", mmap=isinstance(source, Path))
    except Exception:
        raise BadRequest("'share' is not tensors saved with torch.save (or it holds other objects).") from None
    if not isinstance(part, dict):
        raise BadRequest("'share' must hold a dict of named tensors.")
    if set(part) != set(expected):
        # Named from the spec only: the part's own extra keys are the caller's payload.
        missing = sorted(set(expected) - set(part))
        extra = len(set(part) - set(expected))
        raise BadRequest(
            f"'share' does not hold the tensors the spec needs for {_PART_OF[role]} part "
            f"(missing: {', '.join(missing) or 'none'}; {extra} other entries)."
        )
    try:
        check_part(spec, role, part)
    except ValueError as exc:
        raise BadRequest(f"'share' does not fit the spec: {exc}.") from None
    for name, tensor in part.items():
        # The evaluation multiplies these as they are: nothing sparse, strided over gaps or broadcast.
        if tensor.layout != torch.strided or not tensor.is_contiguous():
            raise BadRequest(f"'share': '{name}' must be a dense, contiguous tensor.")
    return dict(part)


def _stage_file(
    *, role: str, party: int | None, spec: ModelSpec, upload=None, content: bytes | None = None
) -> StagedShare:
    """Stage an uploaded part on disk and check it against a checked role and spec."""
    staged = stage(upload=upload, content=content, field="share", noun="share", limit=settings.GRIDNODE_MAX_MODEL_BYTES)
    with staged.discarded_on_error():
        part = _load_part(staged.path, spec=spec, role=role)
        del part  # releases the memory map before the file is moved into storage
    return StagedShare(**vars(staged), role=role, party=party, spec=spec)


def share_stage(*, role, party, spec_json, upload=None, content: bytes | None = None) -> StagedShare:
    """Check a part (a multipart file or decoded bytes) against its role, party and spec, and stage it."""
    role, party = share_role_check(role=role, party=party)
    spec = share_spec_check(spec_json=spec_json)
    return _stage_file(role=role, party=party, spec=spec, upload=upload, content=content)


def _registration(model_id: str) -> EncryptedModel:
    """A registration by model id, or a 404."""
    if not OBJECT_ID_RE.fullmatch(model_id):
        # Never registered (registration checks the id rules); and PostgreSQL refuses a NUL in a query.
        raise NotFound(REGISTRATION_NOT_FOUND)
    try:
        return EncryptedModel.objects.get(model_id=model_id)
    except EncryptedModel.DoesNotExist:
        raise NotFound(REGISTRATION_NOT_FOUND) from None


def _already_has_a_share(registration: EncryptedModel) -> Conflict:
    return Conflict(f"Encrypted model with id: {registration.model_id} already has a share on this node.")


def share_available(*, registration: EncryptedModel) -> None:
    """A 409 when the registration already has a share here; checked early so a duplicate is not staged."""
    if ModelShare.objects.filter(registration=registration).exists():
        raise _already_has_a_share(registration)


def _full_clean(share: ModelShare) -> None:
    """The model's field rules as a 400 naming the field.

    Not the registration's existence: full_clean would query it, and a registration deleted just after
    that query is the database's to settle (the insert fails, and `share_save` answers 404).
    """
    try:
        share.full_clean(exclude=["registration"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise BadRequest(f"'{field}': {messages[0]}") from None


def share_save(
    *,
    registration: EncryptedModel,
    staged: StagedShare,
    allow_remote_inference: bool,
    allow_download: bool,
    uploaded_by: AbstractBaseUser | None = None,
) -> ModelShare:
    """Store a staged part as a registration's share (gridnode.storedfiles: the file and its row, or
    neither); the one-to-one column settles concurrent uploads, the foreign key a registration deleted
    meanwhile (a 404).
    """

    def available() -> None:
        share_download_check(allow_download)
        share_available(registration=registration)

    def taken() -> Exception | None:
        if ModelShare.objects.filter(registration_id=registration.pk).exists():
            return _already_has_a_share(registration)
        if not EncryptedModel.objects.filter(pk=registration.pk).exists():
            return NotFound(REGISTRATION_NOT_FOUND)  # deleted while the part was being stored
        return None

    return store(
        staged,
        folder="shares",
        suffix=".pt",
        available=available,
        taken=taken,
        clean=_full_clean,
        row=lambda name: ModelShare(
            registration=registration,
            role=staged.role,
            party=staged.party,
            spec=staged.spec.to_json(),
            spec_digest=staged.spec.digest(),
            archive=name,
            size=staged.size,
            sha256=staged.sha256,
            allow_remote_inference=allow_remote_inference,
            allow_download=allow_download,
            uploaded_by=authenticated_or_none(uploaded_by),
        ),
    )


def share_store(
    *,
    model_id: str,
    role,
    party,
    spec_json,
    upload=None,
    content: bytes | None = None,
    allow_remote_inference: bool = False,
    allow_download: bool = False,
    uploaded_by: AbstractBaseUser | None = None,
) -> ModelShare:
    """Check and store this node's part of a registered model.

    A 404 without the registration, a 400 for a bad role, party or spec, a 409 when it already has a
    share here, then a 400 (or 413) for a file that is not the part the spec needs for the role.
    """
    share_download_check(allow_download)
    registration = _registration(model_id)
    role, party = share_role_check(role=role, party=party)
    spec = share_spec_check(spec_json=spec_json)
    share_available(registration=registration)
    staged = _stage_file(role=role, party=party, spec=spec, upload=upload, content=content)
    return share_save(
        registration=registration,
        staged=staged,
        allow_remote_inference=allow_remote_inference,
        allow_download=allow_download,
        uploaded_by=uploaded_by,
    )


def share_get(*, model_id: str) -> ModelShare:
    """This node's part of an encrypted model; a 404 naming what is missing.

    Read on every encrypted inference and randomness request, so in plain SQL (the ORM took 0.57 ms to
    build and run it, this 0.25); its registration is read when first used.
    """
    if not OBJECT_ID_RE.fullmatch(model_id):
        raise NotFound(REGISTRATION_NOT_FOUND)
    for share in ModelShare.objects.raw(_SHARE_BY_MODEL_ID, [model_id]):
        return share
    _registration(model_id)  # a 404 for the registration itself when that is what is missing
    raise NotFound(SHARE_NOT_FOUND)


_SHARE_BY_MODEL_ID = (
    f"SELECT s.* FROM {ModelShare._meta.db_table} s JOIN {EncryptedModel._meta.db_table} r "
    "ON s.registration_id = r.id WHERE r.model_id = %s"
)


def share_delete(*, model_id: str) -> None:
    """Delete this node's part of an encrypted model; its file goes once the deletion commits (gridnode.storedfiles)."""
    with transaction.atomic():
        deleted, _ = ModelShare.objects.filter(registration__model_id=model_id).delete()
    if not deleted:
        _registration(model_id)
        raise NotFound(SHARE_NOT_FOUND)


def share_set_permissions(
    *, model_id: str, allow_remote_inference: bool | None = None, allow_download: bool | None = None
) -> ModelShare:
    """Change who may run a share; a flag left None keeps its value (allow_download can only stay false)."""
    share_download_check(allow_download)
    share = share_get(model_id=model_id)
    changed = []
    if allow_remote_inference is not None:
        share.allow_remote_inference = allow_remote_inference
        changed.append("allow_remote_inference")
    if allow_download is not None:
        share.allow_download = allow_download
        changed.append("allow_download")
    if changed:
        _full_clean(share)
        with transaction.atomic():
            # Only the flags: a concurrent change of the other flag is not written over.
            share.save(update_fields=changed)
    return share


def share_for_download(*, model_id: str) -> ModelShare:
    """A share whose owner allows copies, or a 404/403 (always the 403 now: parts are never downloadable)."""
    share = share_get(model_id=model_id)
    if not share.allow_download:
        raise Forbidden(NOT_ALLOWED_TO_DOWNLOAD)
    return share


def _load_stored_part(share: ModelShare, *, spec: ModelSpec, role: str) -> Part:
    """A stored part's tensors, memory-mapped when the storage is a local disk; a part deleted since its
    row was read is the 404 of the share, as if the request had come a moment later."""
    source: Path | io.BytesIO
    try:
        source = Path(default_storage.path(share.stored_name))
    except NotImplementedError:  # the object store (gridnode/objectstore.py)
        source = io.BytesIO(share.read_stored())
    try:
        return _load_part(source, spec=spec, role=role)
    except FileNotFoundError:
        raise NotFound(SHARE_NOT_FOUND) from None


def share_load(*, model_id: str, role: str) -> tuple[ModelShare, ModelSpec, Part]:
    """This node's part of an encrypted model, ready to run as `role`: (share, spec, tensors).

    A 404 when there is no such share, a 403 unless its owner allows remote inference, a 409 when this
    node holds the part of the other role. One query per call; the spec and tensors come from this
    process's cache while the stored file is the one loaded before.
    """
    if role not in ModelShare.Role.values:
        raise ValueError(f"role is worker or crypto_provider, not {role!r}")
    share = share_get(model_id=model_id)
    if not share.allow_remote_inference:
        raise Forbidden(NOT_ALLOWED_TO_INFER)
    if share.role != role:
        raise Conflict(f"This node holds {_PART_OF[share.role]} part of this encrypted model, not {_PART_OF[role]}.")
    key = (model_id, share.stored_name)
    entry = part_cache.get(key)
    if entry is None:
        spec = ModelSpec.from_json(share.spec)
        entry = (spec, _load_stored_part(share, spec=spec, role=role))
        part_cache.put(key, entry)
    return share, *entry


def share_file_names() -> dict[str, str]:
    """The storage name of every share's file, with its model id (for `manage.py storage_check`)."""
    return dict(ModelShare.objects.order_by().values_list("archive", "registration__model_id"))
