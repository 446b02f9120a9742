"""Every write and every rule about hosted models; the API views and the admin both call these."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction

from gridnode.auth import authenticated_or_none
from gridnode.errors import BadRequest, Conflict, Forbidden, NotFound
from gridnode.storedfiles import Staged, stage, store
from models_app import archives, executor
from models_app.executor import ModelRef
from models_app.models import HostedModel

NOT_ALLOWED_TO_DOWNLOAD = "You're not allowed to download this model."
NOT_ALLOWED_TO_INFER = "You're not allowed to run inference on this model."
_SUFFIX = {archives.JIT: ".pt", archives.PLAN: ".pt2"}


@dataclass
class StagedArchive(Staged):
    """An uploaded archive in the staging folder, checked, not yet stored under a model id."""

    kind: str


def archive_stage(*, upload=None, content: bytes | None = None, model_type: str | None = None) -> StagedArchive:
    """Check an uploaded archive (a multipart file or decoded bytes) by loading it once, in an inference
    process under its bounds (executor.check_archive): the serving process never loads a stranger's model.
    """
    staged = stage(upload=upload, content=content, field="model", noun="model", limit=settings.GRIDNODE_MAX_MODEL_BYTES)
    with staged.discarded_on_error():
        with open(staged.path, "rb") as source:
            kind = archives.detect_kind(source)
        if model_type not in (None, "", kind):
            raise BadRequest(f"'model_type' says {model_type!s:.8} but the archive is a {kind} archive.")
        executor.check_archive(staged.path, kind)
    return StagedArchive(**vars(staged), kind=kind)


def model_id_available(*, model_id: str) -> None:
    """A 409 when the id is taken; checked early so a duplicate upload is not loaded for nothing."""
    if HostedModel.objects.filter(model_id=model_id).exists():
        raise Conflict(f"Model with id: {model_id} already exists.")


def model_serve(
    *,
    model_id: str,
    staged: StagedArchive,
    allow_download: bool,
    allow_remote_inference: bool,
    uploaded_by: AbstractBaseUser | None = None,
) -> HostedModel:
    """Store a staged archive under a new model id; the unique constraint settles concurrent uploads.

    `uploaded_by` is the authenticated user who sent it (None, or an anonymous user, records nobody).
    """
    return store(
        staged,
        folder="models",
        suffix=_SUFFIX[staged.kind],
        available=lambda: model_id_available(model_id=model_id),
        taken=lambda: Conflict(f"Model with id: {model_id} already exists."),
        row=lambda name: HostedModel(
            model_id=model_id,
            kind=staged.kind,
            archive=name,
            size=staged.size,
            sha256=staged.sha256,
            allow_download=allow_download,
            allow_remote_inference=allow_remote_inference,
            uploaded_by=authenticated_or_none(uploaded_by),
        ),
    )


def model_delete(*, model_id: str) -> None:
    """Delete a hosted model; its archive goes once the deletion commits (gridnode/storedfiles.py)."""
    with transaction.atomic():
        deleted, _ = HostedModel.objects.filter(model_id=model_id).delete()
    if not deleted:
        raise NotFound("Model not found!")


def model_ids() -> list[str]:
    """The ids of every hosted model, oldest first."""
    return list(HostedModel.objects.values_list("model_id", flat=True))


def model_get(*, model_id: str) -> HostedModel:
    """A hosted model by id, or a 404."""
    try:
        return HostedModel.objects.get(model_id=model_id)
    except HostedModel.DoesNotExist:
        raise NotFound("Model not found.") from None


def model_for_download(*, model_id: str) -> HostedModel:
    """A hosted model whose owner allows copies, or a 404/403."""
    hosted = model_get(model_id=model_id)
    if not hosted.allow_download:
        raise Forbidden(NOT_ALLOWED_TO_DOWNLOAD)
    return hosted


_INFERENCE_LOOKUP = (
    f"SELECT archive, kind, allow_remote_inference FROM {HostedModel._meta.db_table} WHERE model_id = %s"
)


def model_for_inference(*, model_id: str) -> ModelRef:
    """Where to find the model behind an id whose owner allows remote inference, or a 404/403.

    One indexed query per call. The model runs in an inference process (models_app/executor.py), which
    keeps it loaded under `(model_id, archive name)`: a model deleted or replaced elsewhere has a new
    name, so it is never served stale.
    """
    # The hottest query on the node, so plain SQL: building it with the ORM cost more than running it.
    with connection.cursor() as cursor:
        cursor.execute(_INFERENCE_LOOKUP, [model_id])
        row = cursor.fetchone()
    if row is None:
        raise NotFound("Model not found.")
    name, kind, allowed = row
    if not allowed:
        raise Forbidden(NOT_ALLOWED_TO_INFER)
    return ModelRef(model_id=model_id, archive=name, kind=kind)


def model_archive_names() -> dict[str, str]:
    """The storage name of every hosted model's archive, with its model id (for `manage.py storage_check`)."""
    return dict(HostedModel.objects.order_by().values_list("archive", "model_id"))
