"""Stored parts leave with their rows, whichever path deletes them (API, a registration's deletion, admin, shell)."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from smpc_app.models import ModelShare
from smpc_app.shares import part_cache


@receiver(post_delete, sender=ModelShare)
def delete_share_file(sender, instance: ModelShare, **kwargs) -> None:
    """Remove the part's file and this process's loaded copy once the deletion has committed.

    A rolled-back delete keeps both. Other processes never ask for the file again: its name is gone.
    """
    storage, name = instance.archive.storage, instance.archive.name
    if name:

        def forget() -> None:
            part_cache.discard_archive(name)
            storage.delete(name)

        transaction.on_commit(forget)
