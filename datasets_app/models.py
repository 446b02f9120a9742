from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from gridnode.http import OBJECT_ID_RE, OBJECT_ID_RULE
from gridnode.storedfiles import StoredFileRow

TAG_MAX_LENGTH = 100


class Tag(models.Model):
    """A dataset tag such as `#mnist`, one row per distinct name so tag search is an index lookup."""

    name = models.CharField(max_length=TAG_MAX_LENGTH, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Dataset(StoredFileRow):
    """One tensor stored on this node, described and tagged so that others can find it.

    On PostgreSQL a trigram index (migration 0002, not visible to the ORM) backs the substring
    search over `description`.
    """

    file_field = "data"
    not_found = "Dataset not found."

    dataset_id = models.CharField(
        max_length=128,
        unique=True,
        validators=[RegexValidator(f"^{OBJECT_ID_RE.pattern}$", f"Dataset ids are {OBJECT_ID_RULE}.")],
    )
    description = models.TextField(blank=True, default="")
    tags = models.ManyToManyField(Tag, related_name="datasets", blank=True)
    shape = models.JSONField(default=list, blank=True, help_text="The tensor's shape, a list of sizes.")
    dtype = models.CharField(max_length=32, help_text="The tensor's dtype without the torch. prefix, e.g. float32.")
    data = models.FileField(max_length=255, help_text="The tensor as torch.save bytes.")
    size = models.PositiveBigIntegerField(help_text="Size of the stored torch.save bytes.")
    sha256 = models.CharField(max_length=64)
    allow_download = models.BooleanField(default=False)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="uploaded_datasets",
        help_text="The user whose token (or admin login) uploaded it; empty for anonymous uploads.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.dataset_id

    def tag_names(self) -> list[str]:
        """This dataset's tags in code-point order, whatever the database collation (uses a prefetch)."""
        return sorted(tag.name for tag in self.tags.all())
