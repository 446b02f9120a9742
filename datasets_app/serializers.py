"""How a dataset's metadata reads in responses, and what the bodies that create and search datasets may
hold (checked and documented once, by their fields; the dataset rules stay in services)."""

from rest_framework import serializers

from datasets_app import services
from datasets_app.models import Dataset
from gridnode.fields import (
    EncodingField,
    ObjectIdField,
    RequestBody,
    StrictBooleanField,
    TensorField,
    TextField,
    TextListField,
)
from gridnode.http import OBJECT_ID_RULE

INVALID_PAYLOAD = "Invalid payload format"


class DatasetSerializer(serializers.ModelSerializer):
    """A dataset's metadata: never its tensor, which has its own download endpoint."""

    id = serializers.CharField(source="dataset_id")
    tags = serializers.ListField(source="tag_names", child=serializers.CharField())

    class Meta:
        model = Dataset
        fields = [
            "id",
            "tags",
            "description",
            "shape",
            "dtype",
            "size",
            "sha256",
            "allow_download",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CreateDatasetBody(RequestBody):
    """One tensor with its tags, description and download permission."""

    # Declared in the order the contract checks them (RequestBody: the first refusal is the answer).
    id = ObjectIdField(required=False, help_text=f"{OBJECT_ID_RULE}; a uuid4 when absent.")
    tags = TextListField(required=False, help_text="1-100 characters each.")
    description = TextField(required=False)
    allow_download = StrictBooleanField()
    # DRF's metaclass takes declared fields off the class: this does not hide Serializer.data.
    data = TensorField(  # type: ignore[assignment]
        help_text="The tensor: a (nested) JSON array of numbers, or torch.save bytes as text under 'encoding'.",
    )
    dtype = TextField(required=False, help_text="The dtype of JSON data (default float32).")
    # Read by `data` (json, the default, for arrays); a file part needs none.
    encoding = EncodingField(required=False, help_text="json (the default for arrays), ISO-8859-1 or base64.")

    def validate_tags(self, tags):
        return services.tags_check(tags=tags)

    def validate_description(self, description):
        return services.description_check(description=description)

    def validate_dtype(self, dtype):
        return services.dtype_check(dtype=dtype)


class SearchBody(RequestBody):
    """The terms a dataset must all match: a tag, its id, or a substring of its description."""

    forms = False  # read as JSON whatever the Content-Type (DatasetSearchViewSet.search)
    refusal = INVALID_PAYLOAD  # the contract's one 400 for every malformed body

    query = TextListField(min_items=1)
