"""How a dataset's metadata reads in responses (writes are parsed in views and checked in services)."""

from rest_framework import serializers

from datasets_app.models import Dataset


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
