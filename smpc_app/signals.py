"""A change to the trusted nodes is seen at once by this process's copy of them.

(A deleted part's file, and this process's loaded copy of it, go with the stored-file lifecycle of
gridnode.storedfiles: see `ModelShare.forget_loaded`.)
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from smpc_app.models import TrustedNode
from smpc_app.trust import trust_list


@receiver(post_save, sender=TrustedNode)
@receiver(post_delete, sender=TrustedNode)
def forget_trust_list(sender, **kwargs) -> None:
    """Make this process read the trusted nodes again (other processes do within TRUST_CACHE_SECONDS)."""
    trust_list.clear()
