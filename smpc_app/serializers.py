"""How a registration is answered: its id, description, node URLs in order, and when it was made."""

from rest_framework import serializers

from smpc_app.models import EncryptedModel


class EncryptedModelSerializer(serializers.ModelSerializer):
    """A registration as the API answers it (read-only; writes go through `smpc_app.services`)."""

    workers = serializers.ListField(source="worker_urls", read_only=True)
    crypto_provider = serializers.ListField(source="crypto_provider_urls", read_only=True)

    class Meta:
        model = EncryptedModel
        fields = ["model_id", "description", "workers", "crypto_provider", "created_at"]
        read_only_fields = fields
