"""Stored archives leave with their rows, whichever path deletes them (API, admin, shell)."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from models_app.models import HostedModel


@receiver(post_delete, sender=HostedModel)
def delete_archive_file(sender, instance: HostedModel, **kwargs) -> None:
    """Remove the archive once the deletion has committed; a rolled-back delete keeps its file."""
    storage, name = instance.archive.storage, instance.archive.name
    if name:
        transaction.on_commit(lambda: storage.delete(name))
