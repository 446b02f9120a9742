"""Operators' view of encrypted models: registrations with their nodes inline, saved by the API's services."""

import math

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.forms.models import BaseInlineFormSet

from gridnode.errors import GridError
from smpc_app import services
from smpc_app.addresses import MAX_URL_LENGTH, URL_RULE, normalize_node_url
from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode


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

    nodes: services.NodeLists | None = None

    def validate_unique(self) -> None:
        # Positions are renumbered on save, so two rows may share one (row order breaks the tie) and
        # reordering never trips over the old numbers; a URL listed twice is caught in clean().
        return

    def clean(self) -> None:
        super().clean()
        entries = []
        for index, form in enumerate(self.forms):
            if self._should_delete_form(form):
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
            self.nodes = services.node_lists_check(
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

    list_display = ["model_id", "workers", "crypto_provider", "created_at"]
    search_fields = ["model_id", "description", "nodes__url"]
    ordering = ["-created_at"]
    inlines = [NodeAssignmentInline]
    fields = ["model_id", "description", "created_at", "updated_at"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("assignments", queryset=NodeAssignment.objects.select_related("node")))
        )

    def get_readonly_fields(self, request, obj=None):
        # The id is typed in once; afterwards the description and the nodes change.
        return ["created_at", "updated_at"] if obj is None else ["model_id", "created_at", "updated_at"]

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
        nodes = next(formset.nodes for formset in formsets if isinstance(formset, NodeAssignmentFormSet))
        obj = form.instance
        if change:
            services.encrypted_model_update(
                registration=obj,
                description=form.cleaned_data["description"],
                workers=nodes.workers,
                crypto_provider=nodes.crypto_provider,
            )
        else:
            registration = services.encrypted_model_register(
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
        services.encrypted_model_delete(model_id=obj.model_id)

    def delete_queryset(self, request, queryset):
        for model_id in queryset.values_list("model_id", flat=True):
            services.encrypted_model_delete(model_id=model_id)


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
