"""Request body fields: each reads one kind of value the way the contract does (a JSON body, a form and a
multipart body alike) and describes it in the OpenAPI document, so that a body is written once, as a
`RequestBody` serializer, and both its checks and its schema come from there.

The rules themselves (what an id, a flag or an encoding may be) are gridnode.http's, which the inference
process and the admin use as well; a field says which rule a body field follows and how it is documented.
"""

import copy
import json

from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers
from rest_framework.fields import empty

from gridnode.errors import BadRequest
from gridnode.http import (
    JSON,
    OBJECT_ID_RE,
    OBJECT_ID_RULE,
    check_object_id,
    decode_text,
    is_upload,
    parse_bool,
    parse_encoding,
)

NOT_AN_OBJECT = "The request body must be a JSON object or a form."

OBJECT_ID_SCHEMA = {"type": "string", "pattern": f"^{OBJECT_ID_RE.pattern}$", "description": OBJECT_ID_RULE}
BOOLEAN_SCHEMA = {
    "description": "JSON true/false, or the text True/False/true/false/1/0 (forms); default false.",
    "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["True", "False", "true", "false", "1", "0"]}],
}
ENCODING_SCHEMA = {
    "type": "string",
    "description": "How binary content was made text: ISO-8859-1 (also latin-1, latin1) or base64.",
    "example": "ISO-8859-1",
}


class RequestBody(serializers.Serializer):
    """A JSON, form or multipart body, read field by field in the order the fields are declared.

    The contract answers the first refusal with its own message, so a field refuses by raising BadRequest
    (gridnode.errors), which stops the reading there; DRF's ValidationError would be collected with every
    other field's. A `validate_<field>` method may hand the value to the service rule that owns it.
    """

    # Whether the body may also come as a form or a multipart body (gridnode.schema describes all three).
    forms = True
    # One message for every refusal, where the contract has only one (the seed's /search).
    refusal: str | None = None

    @classmethod
    def parse(cls, data) -> dict:
        """The body's values, or a 400 naming the first field that was wrong."""
        try:
            if not hasattr(data, "get"):
                raise BadRequest(NOT_AN_OBJECT)
            body = cls(data=data)
            body.is_valid(raise_exception=True)  # every field refuses with BadRequest, which passes through
        except BadRequest:
            if cls.refusal is None:
                raise
            raise BadRequest(cls.refusal) from None
        return body.validated_data

    def file_fields(self) -> tuple[str, ...]:
        """The fields that may be a multipart file part (raw bytes, no encoding)."""
        return tuple(name for name, field in self.fields.items() if getattr(field, "file_part", False))


class BodyField(serializers.Field):
    """One field of a parsed body: absent, JSON null and an empty form value all read as absent.

    An absent optional field takes its `default` (None unless given), and its `validate_<field>` method
    still runs, so a service rule decides what absent means.
    """

    default_error_messages = {"required": "'{name}' is required."}
    # May be a multipart file part; described as binary in a multipart body.
    file_part = False
    # Whether "" is absent, as an empty form value is.
    empty_text_is_absent = True

    @property
    def name(self) -> str:
        """The field's name in the body (DRF sets it when the serializer binds the field)."""
        return self.field_name or ""

    def get_value(self, dictionary):
        # A form's last value for the name, as Django's QueryDict.get gives it.
        return dictionary.get(self.name)

    def run_validation(self, data=empty):
        if data is empty or data is None or (self.empty_text_is_absent and data == ""):
            if self.required:
                self.fail("required")
            return None if self.default is empty else self.default
        value = self.to_internal_value(data)
        self.run_validators(value)
        return value

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value

    def fail(self, key, **kwargs):
        raise BadRequest(self.error_messages[key].format(name=self.name, **kwargs))

    def openapi_schema(self) -> dict:
        """This field's schema in a JSON body (gridnode.schema derives the form and multipart ones)."""
        return {"type": "string"}


class BodyFieldSchema(OpenApiSerializerFieldExtension):
    """drf-spectacular reads a body field's schema from the field itself (its help_text, when set, is the
    description)."""

    target_class = BodyField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        return self.target.openapi_schema()


class ObjectIdField(BodyField):
    """A model or dataset id, following the id rules (OBJECT_ID_RULE)."""

    def to_internal_value(self, data):
        return check_object_id(data, self.name)

    def openapi_schema(self) -> dict:
        return copy.deepcopy(OBJECT_ID_SCHEMA)


class StrictBooleanField(BodyField):
    """A flag: JSON true/false or the text True/False/true/false/1/0; anything else is refused (never
    Python's truthiness, where "no" would be true). Absent is false unless told otherwise."""

    def __init__(self, **kwargs):
        kwargs.setdefault("default", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        return parse_bool(data, self.name)

    def openapi_schema(self) -> dict:
        return copy.deepcopy(BOOLEAN_SCHEMA)


class TextField(BodyField):
    """Text, checked by `choices` or by the serializer's `validate_<field>` (which sees the value as sent,
    so that the rule owning it words its own refusal)."""

    default_error_messages = {"invalid_choice": "'{name}' must be {choices}."}

    def __init__(self, *, choices: tuple[str, ...] = (), **kwargs):
        self.choices = choices
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if self.choices and data not in self.choices:
            self.fail("invalid_choice", choices=" or ".join(self.choices))
        return data

    def openapi_schema(self) -> dict:
        if not self.choices:
            return {"type": "string"}
        # An empty value is absent, so it is allowed wherever the field is optional.
        return {"type": "string", "enum": [*self.choices, *([] if self.required else [""])]}


class TextListField(BodyField):
    """A list of text: a JSON array, or the field repeated in a form (absent there: an empty list)."""

    empty_text_is_absent = False  # "" in JSON is not a list

    default_error_messages = {
        "invalid": "'{name}' must be a list of strings.",
        "too_short": "'{name}' must hold at least {count} items.",
    }

    def __init__(self, *, min_items: int = 0, **kwargs):
        self.min_items = min_items
        super().__init__(**kwargs)

    def get_value(self, dictionary):
        if hasattr(dictionary, "getlist"):
            return dictionary.getlist(self.name)
        return dictionary.get(self.name)

    def to_internal_value(self, data):
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            self.fail("invalid")
        if len(data) < self.min_items:
            self.fail("too_short", count=self.min_items)
        return data

    def openapi_schema(self) -> dict:
        schema: dict[str, object] = {"type": "array", "items": {"type": "string"}}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


class EncodingField(BodyField):
    """How a sibling's binary content was made text. Checked by that content field, and only when the
    content came as text (a file part needs none); the value here is as sent."""

    def openapi_schema(self) -> dict:
        return copy.deepcopy(ENCODING_SCHEMA)


class _EncodedField(BodyField):
    """A field whose text is read under the sibling field named `encoding_field` (see EncodingField)."""

    file_part = True

    def __init__(self, *, encoding_field: str = "encoding", **kwargs):
        self.encoding_field = encoding_field
        super().__init__(**kwargs)

    def get_value(self, dictionary):
        return dictionary.get(self.name), dictionary.get(self.encoding_field)

    def run_validation(self, data=empty):
        value, encoding = (None, None) if data is empty else data
        if value is None or value == "":
            if self.required:
                self.fail("required")
            return None
        return self.decode(value, encoding)

    def decode(self, value, encoding) -> bytes | UploadedFile:
        raise NotImplementedError


class EncodedBytesField(_EncodedField):
    """Binary content: a multipart file part (raw bytes, left on disk or in memory as Django parsed it),
    or text under an ISO-8859-1 or base64 `encoding`, decoded to bytes."""

    default_error_messages = {
        "not_text": "'{name}' must be text under an 'encoding', or a multipart file part.",
        "no_encoding": "'{name}' sent as text needs an 'encoding' (ISO-8859-1 or base64).",
    }

    def decode(self, value, encoding) -> bytes | UploadedFile:
        if is_upload(value):
            return value
        if not isinstance(value, str):
            self.fail("not_text")
        name = parse_encoding(encoding, allow_json=False)
        if not name:
            self.fail("no_encoding")
        return decode_text(value, name, self.name)


class TensorField(_EncodedField):
    """A tensor: a (nested) JSON array of numbers (a form carries it as JSON text), torch.save bytes as
    text under an ISO-8859-1 or base64 `encoding` (decoded to bytes), or a multipart file part.

    Which tensor it holds is the caller's to check (a dataset's rules, a model's inputs): the value is the
    file part, the bytes, or the JSON value.
    """

    default_error_messages = {
        "not_text": "'{name}' must be text under the {encoding} encoding.",
        "not_json": "'{name}' is neither a JSON array nor text under an 'encoding'.",
    }

    def decode(self, value, encoding):
        if is_upload(value):
            return value
        name = parse_encoding(encoding, allow_json=True)
        if name != JSON:
            if not isinstance(value, str):
                self.fail("not_text", encoding=name)
            return decode_text(value, name, self.name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
                self.fail("not_json")
        return value

    def openapi_schema(self) -> dict:
        return {}  # any JSON value: an array, or text
