"""Stored parts leave with their rows, whichever path deletes them (API, a registration's deletion, admin, shell);
a change to the trusted nodes is seen at once by this process's copy of them."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from smpc_app.models import ModelShare, TrustedNode
from smpc_app.shares import part_cache
from smpc_app.trust import trust_list


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


@receiver(post_save, sender=TrustedNode)
@receiver(post_delete, sender=TrustedNode)
def forget_trust_list(sender, **kwargs) -> None:
    """Make this process read the trusted nodes again (other processes do within TRUST_CACHE_SECONDS)."""
    trust_list.clear()
