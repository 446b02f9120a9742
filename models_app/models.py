from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from gridnode.http import OBJECT_ID_RE, OBJECT_ID_RULE
from gridnode.storedfiles import StoredFileRow


class HostedModel(StoredFileRow):
    """A PyTorch model hosted on this node: its archive in storage and what others may do with it."""

    file_field = "archive"
    not_found = "Model not found."

    class Kind(models.TextChoices):
        JIT = "jit", "TorchScript (jit)"
        PLAN = "plan", "torch.export (plan)"

    model_id = models.CharField(
        max_length=128,
        unique=True,
        validators=[RegexValidator(f"^{OBJECT_ID_RE.pattern}$", f"Model ids are {OBJECT_ID_RULE}.")],
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    archive = models.FileField(max_length=255)
    size = models.PositiveBigIntegerField(help_text="Archive size in bytes.")
    sha256 = models.CharField(max_length=64)
    allow_download = models.BooleanField(default=False)
    allow_remote_inference = models.BooleanField(default=False)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="uploaded_models",
        help_text="The user whose token (or admin login) uploaded it; empty for anonymous uploads.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=["jit", "plan"]), name="hostedmodel_kind_known"),
        ]

    def __str__(self) -> str:
        return self.model_id
