"""gridnode/fields.py: request bodies read field by field as the contract reads them, and described by the
same fields in the OpenAPI document."""

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import QueryDict

from gridnode.errors import BadRequest
from gridnode.fields import (
    EncodedBytesField,
    EncodingField,
    ObjectIdField,
    RequestBody,
    StrictBooleanField,
    TensorField,
    TextListField,
)


class Upload(RequestBody):
    """A body with one of each field, declared in the order they are checked."""

    upload_id = ObjectIdField()
    public = StrictBooleanField()
    labels = TextListField(required=False)
    content = EncodedBytesField()
    encoding = EncodingField(required=False)


def refusal(data) -> str:
    with pytest.raises(BadRequest) as refused:
        Upload.parse(data)
    return refused.value.message


def test_it_answers_the_first_refusal_in_the_order_fields_are_declared():
    assert refusal({"upload_id": "-bad", "public": "yes"}).startswith("'upload_id' must be")
    assert refusal({"upload_id": "ok", "public": "yes"}) == "'public' must be true or false."
    assert refusal({"upload_id": "ok"}) == "'content' is required."


def test_it_refuses_a_body_that_is_not_an_object():
    assert refusal([1, 2]) == "The request body must be a JSON object or a form."
    assert refusal(None) == "The request body must be a JSON object or a form."


def test_it_reads_json_and_forms_alike():
    as_json = Upload.parse(
        {"upload_id": "a", "public": True, "labels": ["x", "y"], "content": "aGk=", "encoding": "base64"}
    )
    form = QueryDict(mutable=True)
    form.update({"upload_id": "a", "public": "true", "content": "hi", "encoding": "latin1"})
    form.setlist("labels", ["x", "y"])

    assert as_json == {"upload_id": "a", "public": True, "labels": ["x", "y"], "content": b"hi", "encoding": "base64"}
    assert Upload.parse(form) == {**as_json, "encoding": "latin1"}


def test_it_reads_an_empty_form_value_as_absent_but_not_an_empty_json_list_value():
    body = Upload.parse({"upload_id": "a", "public": "", "content": "hi", "encoding": "latin1"})

    assert body["public"] is False
    assert body["labels"] is None
    assert refusal({"upload_id": "a", "labels": "", "content": "hi"}) == "'labels' must be a list of strings."


def test_it_leaves_a_file_part_as_django_parsed_it_whatever_the_encoding_says():
    part = SimpleUploadedFile("blob", b"raw bytes")

    body = Upload.parse({"upload_id": "a", "content": part, "encoding": "rot13"})

    assert body["content"] is part
    assert body["encoding"] == "rot13"  # checked only for text: a file part needs none


@pytest.mark.parametrize(
    ("content", "encoding", "message"),
    [
        (["not", "text"], "base64", "'content' must be text under an 'encoding', or a multipart file part."),
        ("hi", None, "'content' sent as text needs an 'encoding' (ISO-8859-1 or base64)."),
        ("hi", "json", "Unknown encoding: use ISO-8859-1, latin-1, base64."),
        ("***", "base64", "'content' is not valid base64."),
    ],
)
def test_it_refuses_content_that_is_not_text_under_an_encoding(content, encoding, message):
    assert refusal({"upload_id": "a", "content": content, "encoding": encoding}) == message


class Tensor(RequestBody):
    tensor = TensorField()
    encoding = EncodingField(required=False)


@pytest.mark.parametrize(
    ("body", "value"),
    [
        ({"tensor": [[1, 2]]}, [[1, 2]]),
        ({"tensor": "[[1, 2]]"}, [[1, 2]]),  # a form's JSON text
        ({"tensor": "AAE=", "encoding": "base64"}, b"\x00\x01"),
    ],
)
def test_a_tensor_is_a_json_value_or_the_bytes_its_text_holds(body, value):
    assert Tensor.parse(body)["tensor"] == value


def test_a_tensor_refuses_what_is_neither():
    with pytest.raises(BadRequest, match="neither a JSON array nor text"):
        Tensor.parse({"tensor": "[1, 2"})
    with pytest.raises(BadRequest, match="must be text under the base64 encoding"):
        Tensor.parse({"tensor": [1], "encoding": "base64"})


def test_one_refusal_for_every_malformed_body_where_the_contract_has_one():
    class Search(RequestBody):
        refusal = "Invalid payload format"
        query = TextListField(min_items=1)

    malformed: list[object] = [{}, {"query": []}, {"query": [1]}, [], {"query": "x"}]
    for body in malformed:
        with pytest.raises(BadRequest, match="^Invalid payload format$"):
            Search.parse(body)
    assert Search.parse({"query": ["#a"]}) == {"query": ["#a"]}


@pytest.mark.django_db
def test_the_document_describes_a_body_from_its_fields(api):
    paths = orjson.loads(api.get("/api/schema/?format=json").content)["paths"]
    serve = paths["/serve-model"]["post"]["requestBody"]["content"]
    search = paths["/search"]["post"]["requestBody"]["content"]

    json_body = serve["application/json"]["schema"]
    assert json_body["properties"]["model_id"] == ObjectIdField().openapi_schema()
    assert json_body["properties"]["allow_download"] == {**StrictBooleanField().openapi_schema(), "default": False}
    assert json_body["properties"]["model_type"]["enum"] == ["jit", "plan", ""]
    assert sorted(json_body["required"]) == ["model", "model_id"]
    # Forms carry text; a field that may be a file part is binary in a multipart body.
    assert serve["application/x-www-form-urlencoded"]["schema"]["properties"]["allow_download"]["type"] == "string"
    assert serve["multipart/form-data"]["schema"]["properties"]["model"]["format"] == "binary"
    assert search["application/json"]["schema"]["properties"]["query"]["minItems"] == 1
