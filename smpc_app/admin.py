"""Operators' view of encrypted models: registrations with their nodes inline, and this node's share of
each, saved by the API's services."""

import json
import math
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.forms.models import BaseInlineFormSet
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from gridnode.errors import GridError
from smpc_app import registrations, shares, trust
from smpc_app.addresses import MAX_URL_LENGTH, URL_RULE, normalize_node_url
from smpc_app.identity import node_identity
from smpc_app.models import EncryptedModel, ModelShare, NodeAssignment, TrustedNode, WorkerNode


class NodeAssignmentForm(forms.ModelForm):
    """One node of a registration, typed in as a URL; `position` only orders the nodes of a role."""

    url = forms.CharField(label="URL", max_length=MAX_URL_LENGTH, help_text=f"{URL_RULE[0].upper()}{URL_RULE[1:]}.")
    position = forms.IntegerField(
        min_value=0, required=False, help_text="Nodes of a role are kept in this order; blank goes last."
    )

    class Meta:
        model = NodeAssignment
        # The node and position are not written by the form: the service rebuilds the assignments.
        fields = ["role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.setdefault("url", self.instance.node.url)
            self.initial.setdefault("position", self.instance.position)

    def clean_url(self) -> str:
        try:
            return normalize_node_url(self.cleaned_data["url"], "url")
        except GridError as exc:
            raise ValidationError(exc.message) from None


class NodeAssignmentFormSet(BaseInlineFormSet):
    """The nodes of one registration, checked as a whole by the rules `POST /encrypted-models` applies."""

    nodes: registrations.NodeLists | None = None

    def validate_unique(self) -> None:
        # Positions are renumbered on save, so two rows may share one (row order breaks the tie) and
        # reordering never trips over the old numbers; a URL listed twice is caught in clean().
        return

    def clean(self) -> None:
        super().clean()
        entries = []
        for index, form in enumerate(self.forms):
            # Django's documented way to skip a deleted row in a formset's clean(); django-stubs leaves it out.
            if self._should_delete_form(form):  # type: ignore[attr-defined]
                continue
            if form.errors:
                return  # reported on the row; the formset is invalid anyway
            if not form.cleaned_data.get("url"):
                continue  # an extra row left empty
            position = form.cleaned_data.get("position")
            entries.append(
                (form.cleaned_data["role"], math.inf if position is None else position, index, form.cleaned_data["url"])
            )
        entries.sort()
        try:
            self.nodes = registrations.node_lists_check(
                workers=[url for role, *_, url in entries if role == NodeAssignment.Role.WORKER],
                crypto_provider=[url for role, *_, url in entries if role == NodeAssignment.Role.CRYPTO_PROVIDER],
            )
        except GridError as exc:
            raise ValidationError(exc.message) from None


class NodeAssignmentInline(admin.TabularInline):
    """A registration's nodes as rows of URL, role and position; saved through the services, not the formset."""

    model = NodeAssignment
    form = NodeAssignmentForm
    formset = NodeAssignmentFormSet
    fields = ["url", "role", "position"]
    # Workers first ("worker" sorts after "crypto_provider"), each role in its order.
    ordering = ["-role", "position"]
    verbose_name = "node"
    verbose_name_plural = "nodes (workers and crypto providers, in order)"

    def get_extra(self, request, obj=None, **kwargs) -> int:
        # A new registration needs two workers and a crypto provider.
        return 3 if obj is None else 1

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("node")


@admin.register(EncryptedModel)
class EncryptedModelAdmin(admin.ModelAdmin):
    """Registrations, added, edited and deleted through the same services as the API."""

    list_display = ["model_id", "workers", "crypto_provider", "share_held", "created_at"]
    search_fields = ["model_id", "description", "nodes__url"]
    ordering = ["-created_at"]
    inlines = [NodeAssignmentInline]
    fields = ["model_id", "description", "share_details", "created_at", "updated_at"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("share")
            .prefetch_related(Prefetch("assignments", queryset=NodeAssignment.objects.select_related("node")))
        )

    def get_readonly_fields(self, request, obj=None):
        # The id is typed in once; afterwards the description and the nodes change. The share has its own page.
        if obj is None:
            return ["share_details", "created_at", "updated_at"]
        return ["model_id", "share_details", "created_at", "updated_at"]

    @admin.display(description="This node's share")
    def share_held(self, obj: EncryptedModel) -> str:
        share = _share_of(obj)
        return "-" if share is None else _part_name(share)

    @admin.display(description="This node's share")
    def share_details(self, obj: EncryptedModel) -> str:
        share = _share_of(obj)
        if share is None:
            return "None uploaded (POST /encrypted-models/<id>/share, or Add model share)."
        inference = "allowed" if share.allow_remote_inference else "not allowed"
        download = "allowed" if share.allow_download else "not allowed"
        return format_html(
            '<a href="{}">{}</a>, {}; remote inference {}, download {}.',
            reverse("admin:smpc_app_modelshare_change", args=[share.pk]),
            _part_name(share),
            filesizeformat(share.size),
            inference,
            download,
        )

    @admin.display(description="Workers")
    def workers(self, obj: EncryptedModel) -> str:
        return ", ".join(obj.worker_urls)

    @admin.display(description="Crypto provider")
    def crypto_provider(self, obj: EncryptedModel) -> str:
        return ", ".join(obj.crypto_provider_urls)

    def save_model(self, request, obj, form, change):
        # Saved with its nodes in save_related, in one service call: a registration never exists without them.
        return

    def save_related(self, request, form, formsets, change):
        # Set by the formset's clean(): the admin saves only valid forms.
        nodes = cast(
            registrations.NodeLists,
            next(formset.nodes for formset in formsets if isinstance(formset, NodeAssignmentFormSet)),
        )
        obj = form.instance
        if change:
            registrations.encrypted_model_update(
                registration=obj,
                description=form.cleaned_data["description"],
                workers=nodes.workers,
                crypto_provider=nodes.crypto_provider,
            )
        else:
            registration = registrations.encrypted_model_register(
                model_id=form.cleaned_data["model_id"],
                description=form.cleaned_data["description"],
                workers=nodes.workers,
                crypto_provider=nodes.crypto_provider,
            )
            # The admin logs and redirects using the object it passed in.
            obj.pk, obj.created_at, obj.updated_at = registration.pk, registration.created_at, registration.updated_at
        for formset in formsets:
            # What the admin's change message reads; the service, not the formset, wrote the rows.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def delete_model(self, request, obj):
        registrations.encrypted_model_delete(model_id=obj.model_id)

    def delete_queryset(self, request, queryset):
        for model_id in queryset.values_list("model_id", flat=True):
            registrations.encrypted_model_delete(model_id=model_id)


@admin.register(WorkerNode)
class WorkerNodeAdmin(admin.ModelAdmin):
    """Worker nodes come into being with the registrations that name them; here operators see who uses them."""

    list_display = ["url", "node_id", "used_by", "last_seen", "created_at"]
    search_fields = ["url", "node_id", "encrypted_models__model_id"]
    fields = ["url", "node_id", "last_seen", "used_by", "created_at"]
    readonly_fields = ["url", "used_by", "created_at"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch(
                    "assignments",
                    queryset=NodeAssignment.objects.select_related("registration").order_by("registration__model_id"),
                )
            )
        )

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="Used by")
    def used_by(self, obj: WorkerNode) -> str:
        uses = [
            f"{assignment.registration.model_id} ({assignment.get_role_display().lower()})"
            for assignment in obj.assignments.all()
        ]
        return ", ".join(uses) or "-"


class TrustedNodeForm(forms.ModelForm):
    """A node to trust, checked by the rules `manage.py smpc_trust add` applies."""

    class Meta:
        model = TrustedNode
        fields = ["url", "public_key", "label"]

    def clean(self):
        cleaned = cast(dict[str, Any], super().clean())  # a ModelForm's clean() answers its cleaned_data
        if self.instance.pk is None and not self.errors:
            try:
                cleaned["url"] = normalize_node_url(cleaned.get("url"), "url")
            except GridError as exc:
                self.add_error("url", exc.message)
            if cleaned.get("public_key") == node_identity().public_key:
                self.add_error("public_key", "This is this node's own key: a node never trusts itself as another.")
        return cleaned

    def _post_clean(self):
        # The URL is put in canonical form in clean(): check the model's rules after that, not before.
        if "url" in self.cleaned_data:
            self.instance.url = self.cleaned_data["url"]
        super()._post_clean()  # type: ignore[misc]  # BaseModelForm's, which django-stubs leaves out


@admin.register(TrustedNode)
class TrustedNodeAdmin(admin.ModelAdmin):
    """The nodes this node trusts with encrypted models, by address and public key; added through the service."""

    form = TrustedNodeForm
    list_display = ["url", "public_key", "label", "created_at"]
    search_fields = ["url", "public_key", "label"]

    def get_readonly_fields(self, request, obj=None):
        # A node's key or address changing is a new trust decision: remove the entry and add it again.
        return ["created_at"] if obj is None else ["url", "public_key", "created_at"]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "title": f"Trusted nodes (this node's key: {node_identity().public_key})",
        }
        return super().changelist_view(request, extra_context=extra_context)

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["label"])
            return
        try:
            node = trust.trusted_node_add(url=obj.url, public_key=obj.public_key, label=obj.label)
        except GridError as exc:
            # The form's own checks ran already; what is left is a race with another write.
            raise ValidationError(exc.message) from None
        obj.pk, obj.created_at = node.pk, node.created_at


def _share_of(registration: EncryptedModel | None) -> ModelShare | None:
    """A registration's share on this node, or None (also for a registration not saved yet)."""
    if registration is None or registration.pk is None:
        return None
    try:
        return registration.share
    except ModelShare.DoesNotExist:
        return None


def _part_name(share: ModelShare) -> str:
    """Which part a share is, in words: "worker, party 0" or "crypto provider"."""
    return "crypto provider" if share.party is None else f"worker, party {share.party}"


class ModelShareUploadForm(forms.ModelForm):
    """Add a share from a file, checked exactly as `POST /encrypted-models/<id>/share` checks it."""

    party_number = forms.TypedChoiceField(
        label="Party",
        choices=[("", "- (the crypto provider)"), ("0", "0"), ("1", "1")],
        coerce=int,
        empty_value=None,
        required=False,
        help_text="A worker's party number; empty for the crypto provider.",
    )
    spec_text = forms.CharField(
        label="Spec",
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="The model's spec as JSON (smpc_protocol ModelSpec.to_json()).",
    )
    part_file = forms.FileField(label="Share", help_text="torch.save bytes of the part's dict of int64 tensors.")

    class Meta:
        model = ModelShare
        # Never allow_download: a part is never handed out again (see smpc_app.shares).
        fields = ["registration", "role", "allow_remote_inference"]

    staged: shares.StagedShare | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A registration holds one share on a node.
        registration = cast(forms.ModelChoiceField, self.fields["registration"])
        registration.queryset = EncryptedModel.objects.filter(share__isnull=True)

    def clean(self):
        cleaned = cast(dict[str, Any], super().clean())  # a ModelForm's clean() answers its cleaned_data
        if self.errors or not cleaned.get("part_file"):
            return cleaned
        try:
            shares.share_available(registration=cleaned["registration"])
            self.staged = shares.share_stage(
                role=cleaned["role"],
                party=cleaned["party_number"],
                spec_json=cleaned["spec_text"],
                upload=cleaned["part_file"],
            )
        except GridError as exc:
            self.add_error(None, exc.message)
        return cleaned


@admin.register(ModelShare)
class ModelShareAdmin(admin.ModelAdmin):
    """This node's parts of encrypted models: permissions toggled from the list, through the API's services."""

    list_display = [
        "model_id",
        "role",
        "party",
        "share_size",
        "allow_remote_inference",
        "allow_download",
        "uploaded_by",
        "created_at",
    ]
    list_editable = ["allow_remote_inference"]
    list_filter = ["role", "allow_remote_inference", "allow_download"]
    search_fields = ["registration__model_id"]
    ordering = ["-created_at"]
    readonly_fields = [
        "registration",
        "role",
        "party",
        "spec_json",
        "spec_digest",
        "archive",
        "size",
        "sha256",
        "uploaded_by",
        "created_at",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("registration", "uploaded_by")

    @admin.display(description="Model id", ordering="registration__model_id")
    def model_id(self, obj: ModelShare) -> str:
        return obj.registration.model_id

    @admin.display(description="Size", ordering="size")
    def share_size(self, obj: ModelShare) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="Spec")
    def spec_json(self, obj: ModelShare) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.spec, indent=2))

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ModelShareUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # On the add page the part is uploaded; afterwards only the permissions change.
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return [
                "registration",
                "role",
                "party_number",
                "spec_text",
                "part_file",
                "allow_remote_inference",
            ]
        return [*self.readonly_fields[:8], "allow_remote_inference", *self.readonly_fields[8:]]

    def save_model(self, request, obj, form, change):
        if change:
            # The change page and the list's toggles: the same service as PATCH /encrypted-models/<id>/share.
            shares.share_set_permissions(
                model_id=obj.registration.model_id, allow_remote_inference=obj.allow_remote_inference
            )
            return
        share = shares.share_save(
            registration=form.cleaned_data["registration"],
            staged=form.staged,
            allow_remote_inference=form.cleaned_data["allow_remote_inference"],
            allow_download=False,
            uploaded_by=request.user,
        )
        # The admin logs and redirects using the object it passed in.
        for field in ModelShare._meta.concrete_fields:
            setattr(obj, field.attname, getattr(share, field.attname))

    def delete_model(self, request, obj):
        shares.share_delete(model_id=obj.registration.model_id)

    def delete_queryset(self, request, queryset):
        for model_id in queryset.values_list("registration__model_id", flat=True):
            shares.share_delete(model_id=model_id)
