from django.conf import settings
from django.core.validators import MaxLengthValidator, RegexValidator
from django.db import models

from gridnode.http import OBJECT_ID_RE, OBJECT_ID_RULE
from gridnode.storedfiles import StoredFileRow
from smpc_app.addresses import MAX_URL_LENGTH, validate_canonical_node_url
from smpc_app.identity import PUBLIC_KEY_RE, PUBLIC_KEY_RULE

DESCRIPTION_MAX_LENGTH = 10_000


class WorkerNode(models.Model):
    """A grid node that holds shares of encrypted models or supplies their randomness, one row per address.

    Rows are shared by every registration that names the address and live as long as one does
    (see `smpc_app.registrations`). The node stores the address only; it never connects to it.
    """

    url = models.CharField(
        "URL",
        max_length=MAX_URL_LENGTH,
        unique=True,
        validators=[validate_canonical_node_url],
        help_text="The node's address, an absolute http(s) URL in canonical form.",
    )
    node_id = models.CharField(
        "node id",
        max_length=128,
        blank=True,
        default="",
        validators=[RegexValidator(f"^{OBJECT_ID_RE.pattern}$", f"Node ids are {OBJECT_ID_RULE}.")],
        help_text="The id the node goes by on the grid, when known.",
    )
    last_seen = models.DateTimeField(
        null=True, blank=True, help_text="When the node was last known to be up (this node never contacts it)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(url__startswith="http://") | models.Q(url__startswith="https://"),
                name="workernode_url_http",
                violation_error_message="A worker node's URL is an http or https URL.",
            ),
            models.UniqueConstraint(
                fields=["node_id"],
                condition=~models.Q(node_id=""),
                name="workernode_node_id_unique",
                violation_error_message="Another worker node has this node id.",
            ),
        ]

    def __str__(self) -> str:
        return self.url


class TrustedNode(models.Model):
    """A node this node's operator trusts with encrypted models: its address and its Ed25519 public key.

    This node sends SMPC requests only to trusted nodes, accepts them only from trusted nodes (each
    signed with that node's key), and runs a model only when every node its registration names is one.
    """

    url = models.CharField(
        "URL",
        max_length=MAX_URL_LENGTH,
        unique=True,
        validators=[validate_canonical_node_url],
        help_text="The node's address as registrations name it, an absolute http(s) URL in canonical form.",
    )
    public_key = models.CharField(
        max_length=43,
        unique=True,
        validators=[RegexValidator(f"^{PUBLIC_KEY_RE.pattern}$", f"A public key is {PUBLIC_KEY_RULE}.")],
        help_text="What `manage.py smpc_identity` prints on that node.",
    )
    label = models.CharField(max_length=200, blank=True, default="", help_text="A name for operators.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.url


class EncryptedModel(models.Model):
    """A model kept as secret shares on worker nodes, registered here so that clients can find its pieces."""

    model_id = models.CharField(
        max_length=128,
        unique=True,
        validators=[RegexValidator(f"^{OBJECT_ID_RE.pattern}$", f"Model ids are {OBJECT_ID_RULE}.")],
    )
    description = models.TextField(blank=True, default="", validators=[MaxLengthValidator(DESCRIPTION_MAX_LENGTH)])
    nodes = models.ManyToManyField(WorkerNode, through="NodeAssignment", related_name="encrypted_models")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.model_id

    def node_urls(self, role: str) -> list[str]:
        """The URLs of this model's nodes in one role, in registration order (uses a prefetch when there is one)."""
        assignments = sorted(self.assignments.all(), key=lambda assignment: assignment.position)
        return [assignment.node.url for assignment in assignments if assignment.role == role]

    @property
    def worker_urls(self) -> list[str]:
        """The workers' URLs, in registration order."""
        return self.node_urls(NodeAssignment.Role.WORKER)

    @property
    def crypto_provider_urls(self) -> list[str]:
        """The crypto providers' URLs, in registration order."""
        return self.node_urls(NodeAssignment.Role.CRYPTO_PROVIDER)


class NodeAssignment(models.Model):
    """One node's part in one registration: a worker holding a share, or a crypto provider, at a position."""

    class Role(models.TextChoices):
        WORKER = "worker", "Worker"
        CRYPTO_PROVIDER = "crypto_provider", "Crypto provider"

    registration = models.ForeignKey(EncryptedModel, on_delete=models.CASCADE, related_name="assignments")
    # PROTECT: a node in use is taken out of its registrations first, never deleted from under them.
    node = models.ForeignKey(WorkerNode, on_delete=models.PROTECT, related_name="assignments")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.WORKER)
    position = models.PositiveSmallIntegerField(help_text="Order among the nodes of the same role, from 0.")

    class Meta:
        ordering = ["registration_id", "role", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["registration", "role", "position"],
                name="nodeassignment_role_position_unique",
                violation_error_message="Two nodes of one role share a position.",
            ),
            # One row per node and registration, so a node is never both worker and provider of one model.
            models.UniqueConstraint(
                fields=["registration", "node"],
                name="nodeassignment_node_once",
                violation_error_message="A node appears once per model, as a worker or as the crypto provider.",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=["worker", "crypto_provider"]), name="nodeassignment_role_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} {self.position}"


class ModelShare(StoredFileRow):
    """This node's part of a secret-shared model: a worker's share or the crypto provider's masks, in storage.

    The part is `torch.save` bytes of named int64 tensors, checked at upload against the model's spec
    (`smpc_protocol.hosting.check_part`); a registration has at most one part on a node.
    """

    file_field = "archive"
    not_found = "This node holds no share of this encrypted model."

    Role = NodeAssignment.Role

    registration = models.OneToOneField(EncryptedModel, on_delete=models.CASCADE, related_name="share")
    role = models.CharField(max_length=16, choices=Role.choices)
    party = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="A worker's party number (0 or 1); empty for the crypto provider."
    )
    spec = models.JSONField(help_text="The model's spec (smpc_protocol.spec.ModelSpec) in canonical JSON.")
    spec_digest = models.CharField(max_length=64, help_text="SHA-256 of the canonical spec, as parties compare it.")
    archive = models.FileField(max_length=255)
    size = models.PositiveBigIntegerField(help_text="Part size in bytes.")
    sha256 = models.CharField(max_length=64)
    allow_remote_inference = models.BooleanField(default=False)
    allow_download = models.BooleanField(default=False)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="uploaded_shares",
        help_text="The user whose token (or admin login) uploaded it; empty for anonymous uploads.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=["worker", "crypto_provider"]), name="modelshare_role_known"
            ),
            # A worker is party 0 or 1 of the protocol; the crypto provider is neither.
            models.CheckConstraint(
                condition=(models.Q(role="worker", party__in=[0, 1]) | models.Q(role="crypto_provider", party=None)),
                name="modelshare_party_fits_role",
                violation_error_message="A worker's part has party 0 or 1; the crypto provider's has none.",
            ),
            # Any two of a model's three parts rebuild its weights: no part is ever handed out again.
            models.CheckConstraint(
                condition=models.Q(allow_download=False),
                name="modelshare_never_downloadable",
                violation_error_message="An encrypted model's part is never downloadable: any two parts rebuild it.",
            ),
        ]

    def forget_loaded(self) -> None:
        """The part leaves this process's part cache with its file (other processes never ask for it again: its
        stored name is gone, and they lose their copy as their cache turns over)."""
        from smpc_app.shares import part_cache  # shares builds on this module

        part_cache.discard_archive(self.stored_name)

    def __str__(self) -> str:
        if self.party is None:
            return f"{self.registration.model_id} ({self.get_role_display().lower()})"
        return f"{self.registration.model_id} (worker, party {self.party})"


class RandomnessSession(models.Model):
    """A session whose randomness this node dealt as a crypto provider: its nonce and which parties got theirs.

    The nonce (with this node's SECRET_KEY) fixes the session's randomness, so both workers get halves of
    the same values from whichever process answers them; each half is dealt once (see smpc_app.runtime).
    """

    session_id = models.CharField(max_length=32, unique=True)
    model_id = models.CharField(max_length=128)
    batch = models.PositiveIntegerField()
    nonce = models.BinaryField(max_length=16)
    served_party_0 = models.BooleanField(default=False)
    served_party_1 = models.BooleanField(default=False)
    # Who got each half (the public key that signed the request), so that no node ever gets both.
    party_0_node = models.CharField(max_length=43, blank=True, default="")
    party_1_node = models.CharField(max_length=43, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.session_id


class ExchangeSession(models.Model):
    """A session whose first exchange this node (as party 1) accepted: a replayed first message is refused.

    Later rounds are accepted only by the session's running evaluation, once each, so this row is what
    keeps a captured message from starting anything again once its session is over.
    """

    session_id = models.CharField(max_length=32, unique=True)
    model_id = models.CharField(max_length=128)
    peer_key = models.CharField(max_length=43)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.session_id
