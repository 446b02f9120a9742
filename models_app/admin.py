"""Operators' view of hosted models: permissions toggled from the list, uploads through the API's rules."""

from typing import Any, cast

from django import forms
from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from gridnode.errors import GridError
from gridnode.http import OBJECT_ID_RULE, check_object_id
from models_app import services
from models_app.models import HostedModel


class HostedModelUploadForm(forms.ModelForm):
    """Add a model from an archive file, checked exactly as `POST /serve-model` checks it."""

    archive_file = forms.FileField(
        label="Archive", help_text="A TorchScript (torch.jit.save) or torch.export (torch.export.save) archive."
    )

    class Meta:
        model = HostedModel
        fields = ["model_id", "allow_download", "allow_remote_inference"]
        help_texts = {"model_id": f"{OBJECT_ID_RULE}."}

    staged: services.StagedArchive | None = None

    def clean_model_id(self) -> str:
        model_id = self.cleaned_data["model_id"]
        try:
            check_object_id(model_id, "model_id")
            services.model_id_available(model_id=model_id)
        except GridError as exc:
            raise forms.ValidationError(exc.message) from None
        return model_id

    def clean(self):
        cleaned = cast(dict[str, Any], super().clean())  # a ModelForm's clean() answers its cleaned_data
        if self.errors or not cleaned.get("archive_file"):
            return cleaned
        try:
            self.staged = services.archive_stage(upload=cleaned["archive_file"])
        except GridError as exc:
            self.add_error("archive_file", exc.message)
        return cleaned


@admin.register(HostedModel)
class HostedModelAdmin(admin.ModelAdmin):
    list_display = [
        "model_id",
        "kind",
        "archive_size",
        "allow_download",
        "allow_remote_inference",
        "uploaded_by",
        "created_at",
    ]
    list_editable = ["allow_download", "allow_remote_inference"]
    list_filter = ["allow_download", "allow_remote_inference", "kind"]
    search_fields = ["model_id"]
    ordering = ["-created_at"]
    readonly_fields = ["model_id", "kind", "archive", "size", "sha256", "uploaded_by", "created_at", "updated_at"]

    @admin.display(description="Size", ordering="size")
    def archive_size(self, obj: HostedModel) -> str:
        return filesizeformat(obj.size)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = HostedModelUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # On the add page the id is typed in; afterwards only the permissions change.
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["model_id", "archive_file", "allow_download", "allow_remote_inference"]
        return [*self.readonly_fields[:6], "allow_download", "allow_remote_inference", *self.readonly_fields[6:]]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        hosted = services.model_serve(
            model_id=form.cleaned_data["model_id"],
            staged=form.staged,
            allow_download=form.cleaned_data["allow_download"],
            allow_remote_inference=form.cleaned_data["allow_remote_inference"],
            uploaded_by=request.user,
        )
        # The admin logs and redirects using the object it passed in.
        obj.pk, obj.archive, obj.kind, obj.size, obj.sha256 = (
            hosted.pk,
            hosted.archive,
            hosted.kind,
            hosted.size,
            hosted.sha256,
        )
        obj.uploaded_by, obj.created_at, obj.updated_at = hosted.uploaded_by, hosted.created_at, hosted.updated_at
