"""Stored tensors leave with their rows, whichever path deletes them (API, admin, shell)."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from datasets_app.models import Dataset


@receiver(post_delete, sender=Dataset)
def delete_tensor_file(sender, instance: Dataset, **kwargs) -> None:
    """Remove the tensor file once the deletion has committed; a rolled-back delete keeps its file."""
    storage, name = instance.data.storage, instance.data.name
    if name:
        transaction.on_commit(lambda: storage.delete(name))
