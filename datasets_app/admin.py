"""Operators' view of datasets: tags edited as lines of text, downloads toggled from the list, uploads
and edits checked by the same services as the API."""

from typing import TYPE_CHECKING, Any, TypedDict, cast

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count
from django.template.defaultfilters import filesizeformat, truncatechars

from datasets_app import services
from datasets_app.models import Dataset, Tag
from gridnode.errors import GridError
from gridnode.http import OBJECT_ID_RULE, check_object_id

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class _DatasetCount(TypedDict):
        dataset_count: int


def _tag_lines(text: str) -> list[str]:
    # Tags hold no control characters, so a line break can never be part of one.
    return [line.strip() for line in text.splitlines() if line.strip()]


class DatasetForm(forms.ModelForm):
    """Edit a dataset's description, tags and download permission under the API's rules."""

    tag_lines = forms.CharField(
        label="Tags",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One tag per line, e.g. #mnist. Blank lines and surrounding spaces are dropped.",
    )

    class Meta:
        model = Dataset
        fields = ["description", "allow_download"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["tag_lines"].initial = "\n".join(self.instance.tag_names())

    def clean_tag_lines(self) -> list[str]:
        try:
            return services.tags_check(tags=_tag_lines(self.cleaned_data["tag_lines"]))
        except GridError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean_description(self) -> str:
        try:
            return services.description_check(description=self.cleaned_data["description"])
        except GridError as exc:
            raise forms.ValidationError(exc.message) from None


class DatasetUploadForm(DatasetForm):
    """Add a dataset from a `torch.save` file, checked exactly as `POST /datasets` checks it."""

    new_dataset_id = forms.CharField(
        label="Dataset id",
        required=False,
        max_length=128,
        help_text=f"{OBJECT_ID_RULE}. Left empty, the node makes up a uuid.",
    )
    tensor_file = forms.FileField(label="Tensor", help_text="One tensor saved with torch.save.")

    staged: services.StagedTensor | None = None

    def clean_new_dataset_id(self) -> str | None:
        dataset_id = self.cleaned_data["new_dataset_id"] or None
        if dataset_id is not None:
            try:
                check_object_id(dataset_id, "id")
                services.dataset_id_available(dataset_id=dataset_id)
            except GridError as exc:
                raise forms.ValidationError(exc.message) from None
        return dataset_id

    def clean(self):
        cleaned = cast(dict[str, Any], super().clean())  # a ModelForm's clean() answers its cleaned_data
        if self.errors or not cleaned.get("tensor_file"):
            return cleaned
        try:
            self.staged = services.tensor_stage(upload=cleaned["tensor_file"])
        except GridError as exc:
            self.add_error("tensor_file", exc.message)
        return cleaned


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = [
        "dataset_id",
        "short_description",
        "tag_list",
        "shape",
        "dtype",
        "data_size",
        "allow_download",
        "uploaded_by",
    ]
    list_editable = ["allow_download"]
    list_filter = ["allow_download", "dtype"]
    search_fields = ["dataset_id", "description", "tags__name"]
    ordering = ["-created_at"]
    readonly_fields = [
        "dataset_id",
        "shape",
        "dtype",
        "data",
        "size",
        "sha256",
        "uploaded_by",
        "created_at",
        "updated_at",
    ]
    form = DatasetForm

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    @admin.display(description="Description")
    def short_description(self, obj: Dataset) -> str:
        return truncatechars(obj.description, 60)

    @admin.display(description="Tags")
    def tag_list(self, obj: Dataset) -> str:
        return ", ".join(obj.tag_names())

    @admin.display(description="Size", ordering="size")
    def data_size(self, obj: Dataset) -> str:
        return filesizeformat(obj.size)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DatasetUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        # On the add page everything is typed in; afterwards the tensor and its id are fixed.
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["new_dataset_id", "tensor_file", "tag_lines", "description", "allow_download"]
        return ["dataset_id", "tag_lines", "description", "allow_download", *self.readonly_fields[1:]]

    def save_model(self, request, obj, form, change):
        if change:
            with transaction.atomic():
                super().save_model(request, obj, form, change)
                # The list's inline form edits allow_download only; the change page edits the tags too.
                if "tag_lines" in form.cleaned_data:
                    services.dataset_set_tags(dataset=obj, tags=form.cleaned_data["tag_lines"])
            return
        dataset = services.dataset_create(
            dataset_id=form.cleaned_data["new_dataset_id"],
            tags=form.cleaned_data["tag_lines"],
            description=form.cleaned_data["description"],
            allow_download=form.cleaned_data["allow_download"],
            staged=form.staged,
            uploaded_by=request.user,
        )
        # The admin logs and redirects using the object it passed in.
        obj.pk, obj.dataset_id, obj.data = dataset.pk, dataset.dataset_id, dataset.data
        obj.shape, obj.dtype, obj.size, obj.sha256 = dataset.shape, dataset.dtype, dataset.size, dataset.sha256
        obj.uploaded_by, obj.created_at, obj.updated_at = dataset.uploaded_by, dataset.created_at, dataset.updated_at


class TagForm(forms.ModelForm):
    """A tag renamed or added by hand follows the API's tag rules."""

    class Meta:
        model = Tag
        fields = ["name"]

    def clean_name(self) -> str:
        try:
            return services.tags_check(tags=[self.cleaned_data["name"]])[0]
        except GridError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    form = TagForm
    list_display = ["name", "dataset_count"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(dataset_count=Count("datasets"))

    @admin.display(description="Datasets", ordering="dataset_count")
    def dataset_count(self, obj: "WithAnnotations[Tag, _DatasetCount]") -> int:  # see get_queryset
        return obj.dataset_count
