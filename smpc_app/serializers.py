"""How a registration and this node's share of it are answered, and what the bodies that register a model,
search for one and upload or re-permission a share may hold (read and documented once, by their fields; the
rules about node addresses, roles and specs stay in registrations.py and shares.py)."""

import copy

from django.http import QueryDict
from rest_framework import serializers
from rest_framework.fields import empty

from gridnode.errors import BadRequest
from gridnode.fields import (
    BodyField,
    EncodedBytesField,
    EncodingField,
    ObjectIdField,
    RequestBody,
    StrictBooleanField,
    TextField,
)
from smpc_app.models import EncryptedModel, ModelShare

INVALID_PAYLOAD = "Invalid payload format"


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


class CheckedByServiceField(BodyField):
    """A field the body only documents and passes on as sent (None when absent): the service checks it, absence
    included, and words the refusal, in the order the contract checks (after the registration's 404)."""

    def __init__(self, *, schema: dict, **kwargs):
        self.schema = schema
        super().__init__(**kwargs)

    def run_validation(self, data=empty):
        if data is empty or data is None or data == "":
            return None
        return data

    def openapi_schema(self) -> dict:
        return copy.deepcopy(self.schema)


class NodeUrlsField(CheckedByServiceField):
    """A list of node URLs: a JSON array, or the field repeated in a form; checked by
    `registrations.node_lists_check`."""

    def __init__(self, **kwargs):
        super().__init__(schema={"type": "array", "items": {"type": "string", "format": "uri"}}, **kwargs)

    def get_value(self, dictionary):
        if isinstance(dictionary, QueryDict):
            return dictionary.getlist(self.name) if self.name in dictionary else None
        return dictionary.get(self.name)

    def run_validation(self, data=empty):
        return None if data is empty else data  # "" in JSON is not a list: the service says so


class RegisterBody(RequestBody):
    """A model's id, its workers and crypto provider(s), in order, and a description."""

    # Declared in the order the contract checks them (RequestBody: the first refusal is the answer).
    model_id = ObjectIdField()
    workers = NodeUrlsField(help_text="At least two distinct absolute http(s) URLs.")
    crypto_provider = NodeUrlsField(help_text="At least one http(s) URL, not a worker.")
    description = TextField(required=False, default="")

    def validate_description(self, description):
        if not isinstance(description, str):
            raise BadRequest("'description' must be a string.")
        return description


class SearchText(TextField):
    """Any text, the empty text included (an id that is not one is the search's 404)."""

    empty_text_is_absent = False


class SearchBody(RequestBody):
    """The registration whose node URLs are wanted."""

    refusal = INVALID_PAYLOAD  # the contract's one 400 for every malformed body

    model_id = SearchText()

    def validate_model_id(self, model_id):
        if not isinstance(model_id, str):
            raise BadRequest(INVALID_PAYLOAD)
        return model_id


_PARTIES = {0: 0, 1: 1, "0": 0, "1": 1}


class PartyField(BodyField):
    """A worker's party number: 0 or 1, as a JSON number or form text (whether the role takes one is
    `shares.share_role_check`'s to say)."""

    default_error_messages = {"invalid": "'{name}' must be 0 or 1."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or data not in _PARTIES:
            self.fail("invalid")
        return _PARTIES[data]

    def openapi_schema(self) -> dict:
        return {"oneOf": [{"type": "integer", "enum": [0, 1]}, {"type": "string", "enum": ["0", "1"]}]}


NEVER_DOWNLOADABLE = "Only false: any two parts of a model rebuild its weights, so parts are never downloadable."


class UploadShareBody(RequestBody):
    """This node's part of a registered model: which part, the model's spec, the part's bytes, its permissions."""

    # Declared in the order the contract checks them (RequestBody: the first refusal is the answer); role and
    # spec are checked by shares.share_store, after the registration's 404.
    allow_remote_inference = StrictBooleanField()
    allow_download = StrictBooleanField(help_text=NEVER_DOWNLOADABLE)
    share = EncodedBytesField(
        help_text="torch.save bytes of the part's dict of int64 tensors, as text under 'encoding'.",
    )
    # Read by `share` when it is text; a file part needs none.
    encoding = EncodingField(required=False)
    party = PartyField(required=False, help_text="A worker's party number, 0 or 1; absent for the crypto provider.")
    role = CheckedByServiceField(
        schema={"type": "string", "enum": [*ModelShare.Role.values]}, help_text="Which part this is."
    )
    spec = CheckedByServiceField(
        schema={"type": "object"},
        help_text="The model's spec (smpc_protocol ModelSpec.to_json()); in a form, its JSON text.",
    )


class SharePermissionsBody(RequestBody):
    """Who may run or download a share; a flag left out keeps its value."""

    allow_remote_inference = StrictBooleanField(default=None)
    allow_download = StrictBooleanField(default=None, help_text=NEVER_DOWNLOADABLE)
