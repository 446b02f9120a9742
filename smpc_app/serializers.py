"""How a registration is answered: its id, description, node URLs in order, when it was made, and this
node's share of it (or null)."""

from rest_framework import serializers

from smpc_app.models import EncryptedModel, ModelShare


class ModelShareSerializer(serializers.ModelSerializer):
    """This node's part of an encrypted model as the API answers it: what it is and who may use it, not its bytes."""

    model_id = serializers.CharField(source="registration.model_id", read_only=True)

    class Meta:
        model = ModelShare
        fields = [
            "model_id",
            "role",
            "party",
            "spec",
            "spec_digest",
            "size",
            "sha256",
            "allow_remote_inference",
            "allow_download",
            "created_at",
        ]
        read_only_fields = fields


class EncryptedModelSerializer(serializers.ModelSerializer):
    """A registration as the API answers it (read-only; writes go through `smpc_app.registrations`)."""

    workers = serializers.ListField(source="worker_urls", read_only=True)
    crypto_provider = serializers.ListField(source="crypto_provider_urls", read_only=True)
    # Null until this node's part is uploaded (POST /encrypted-models/<id>/share).
    share = ModelShareSerializer(read_only=True, allow_null=True)

    class Meta:
        model = EncryptedModel
        fields = ["model_id", "description", "workers", "crypto_provider", "share", "created_at"]
        read_only_fields = fields
