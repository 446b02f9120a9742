"""The dataset endpoints: the seed's /dataset-tags and /search, and the REST resource that fills them."""

import json

import orjson
from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import pagination, status, viewsets
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.response import Response

from datasets_app import services
from datasets_app.serializers import DatasetSerializer
from gridnode.auth import DOWNLOAD, READ, WRITE, requires
from gridnode.errors import BadRequest
from gridnode.http import (
    JSON,
    LATIN1,
    body_field,
    check_object_id,
    decode_text,
    encode_bytes,
    is_upload,
    parse_bool,
    parse_encoding,
)
from gridnode.schema import (
    BOOLEAN_FIELD,
    ENCODING_FIELD,
    EXAMPLE_DATASET_ID,
    OBJECT_ID_SCHEMA,
    errors,
    id_parameter,
    json_form_and_multipart,
)
from gridnode.tensors import tensor_to_json
from gridnode.uploads import limit_file_parts

INVALID_PAYLOAD = "Invalid payload format"


_CREATE_BODY = {
    "type": "object",
    "properties": {
        "id": {**OBJECT_ID_SCHEMA, "description": f"{OBJECT_ID_SCHEMA['description']}; a uuid4 when absent."},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "1-100 characters each."},
        "description": {"type": "string"},
        "allow_download": BOOLEAN_FIELD,
        "encoding": {**ENCODING_FIELD, "description": "json (the default for arrays), ISO-8859-1 or base64."},
        "data": {
            "description": "The tensor: a (nested) JSON array of numbers, or torch.save bytes as text under"
            " 'encoding'.",
        },
        "dtype": {"type": "string", "description": "The dtype of JSON data (default float32)."},
    },
    "required": ["data"],
}
_DATASET_ID = id_parameter("dataset_id", EXAMPLE_DATASET_ID, "The dataset's id")
_SEARCH_BODY = {
    "type": "object",
    "properties": {"query": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    "required": ["query"],
}
_INVALID_PAYLOAD = 'Not JSON, no `query`, or not a non-empty list of strings: `{"error": "Invalid payload format"}`.'


class JSONResponses(BaseContentNegotiation):
    """Always answer with the JSON renderer, and leave `?format=` to the views (DRF would read it as a
    renderer name and answer 404 for `?format=csv`)."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DatasetPagination(pagination.PageNumberPagination):
    """`?page=N` (from 1) and `?page_size=` up to 1000; answers `count`, `next`, `previous`, `results`."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class DatasetViewSet(viewsets.GenericViewSet):
    """Create, list, describe, download and delete the datasets on this node."""

    content_negotiation_class = JSONResponses
    pagination_class = DatasetPagination
    serializer_class = DatasetSerializer

    @extend_schema(
        operation_id="create_dataset",
        summary="Store one tensor with its tags, description and download permission (group: write).",
        tags=["datasets"],
        request=json_form_and_multipart(_CREATE_BODY, files=("data",)),
        examples=[
            OpenApiExample(
                "Rows as JSON",
                value={"tags": ["#demo", "#train"], "description": "two rows", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]},
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={201: DatasetSerializer, **errors(400, 401, 409, 411, 413, 415)},
    )
    @requires(WRITE)
    def create(self, request):
        """POST /datasets: store one tensor with its tags, description and download permission."""
        limit_file_parts(request, limit=settings.GRIDNODE_MAX_DATASET_BYTES, what="dataset")
        data = request.data
        raw_id = body_field(data, "id")
        dataset_id = None if raw_id is None or raw_id == "" else check_object_id(raw_id, "id")
        tags = services.tags_check(tags=_tags_field(data))
        description = services.description_check(description=body_field(data, "description"))
        allow_download = parse_bool(body_field(data, "allow_download"), "allow_download")
        if dataset_id is not None:
            services.dataset_id_available(dataset_id=dataset_id)
        dataset = services.dataset_create(
            dataset_id=dataset_id,
            tags=tags,
            description=description,
            allow_download=allow_download,
            staged=_staged_data(data),
            uploaded_by=request.user,
        )
        return Response(self.get_serializer(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="list_datasets",
        summary="Every dataset, or those carrying every ?tag=, a page at a time (group: read).",
        tags=["datasets"],
        parameters=[
            OpenApiParameter("tag", str, many=True, explode=True, description="Keep datasets carrying this tag."),
        ],
        responses={200: DatasetSerializer(many=True), **errors(401, 404, e404="A page past the last one.")},
    )
    @requires(READ)
    def list(self, request):
        """GET /datasets: every dataset, or those carrying every `?tag=`, a page at a time."""
        datasets = services.dataset_list(tags=request.query_params.getlist("tag"))
        page = self.paginate_queryset(datasets)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="get_dataset",
        summary="A dataset's metadata (group: read).",
        tags=["datasets"],
        parameters=[_DATASET_ID],
        responses={200: DatasetSerializer, **errors(400, 401, 404)},
    )
    @requires(READ)
    def retrieve(self, request, dataset_id):
        """GET /datasets/<id>: a dataset's metadata."""
        dataset = services.dataset_get(dataset_id=check_object_id(dataset_id, "id"))
        return Response(self.get_serializer(dataset).data)

    @extend_schema(
        operation_id="download_dataset",
        summary="The tensor as encoded torch.save bytes, or nested lists with ?format=json (group: download).",
        tags=["datasets"],
        parameters=[
            _DATASET_ID,
            OpenApiParameter("format", str, enum=["json"], description="json: the tensor as nested lists."),
            OpenApiParameter(
                "encoding",
                str,
                enum=["ISO-8859-1", "latin-1", "latin1", "base64"],
                description="How torch.save bytes are made text (default ISO-8859-1).",
            ),
        ],
        responses={
            200: OpenApiResponse(
                {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {"encoding": {"type": "string"}, "data": {"type": "string"}},
                            "required": ["encoding", "data"],
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "properties": {
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "dtype": {"type": "string"},
                                "data": {"description": "Nested lists of numbers (or a number for 0-d)."},
                            },
                            "required": ["shape", "dtype", "data"],
                            "additionalProperties": False,
                        },
                    ]
                },
                description="torch.save bytes as text under `encoding`, or with ?format=json the nested lists.",
            ),
            **errors(400, 401, 403, 404),
        },
    )
    @requires(DOWNLOAD)
    def download(self, request, dataset_id):
        """GET /datasets/<id>/data: the tensor as encoded torch.save bytes, or as nested lists with ?format=json."""
        dataset = services.dataset_for_download(dataset_id=check_object_id(dataset_id, "id"))
        output_format = request.query_params.get("format")
        if output_format == JSON:
            tensor = services.dataset_tensor(dataset=dataset)
            if tensor.is_complex():
                raise BadRequest("A complex tensor has no JSON form: download it without format=json.")
            return Response({"shape": list(tensor.shape), "dtype": dataset.dtype, "data": tensor_to_json(tensor)})
        if output_format not in (None, ""):
            raise BadRequest("'format' must be json, or left out for torch.save bytes.")
        encoding = parse_encoding(request.query_params.get("encoding") or LATIN1, allow_json=False)
        raw = dataset.read_stored()
        # ASCII-escaped (`\u00e9`): read right whatever charset the client decodes the answer in (api.md).
        return Response(
            {"encoding": encoding, "data": orjson.Fragment(json.dumps(encode_bytes(raw, encoding)).encode())}
        )

    @extend_schema(
        operation_id="delete_dataset",
        summary="Remove a dataset and its tensor file (group: write).",
        tags=["datasets"],
        parameters=[_DATASET_ID],
        responses={204: OpenApiResponse(description="Deleted."), **errors(400, 401, 404)},
    )
    @requires(WRITE)
    def destroy(self, request, dataset_id):
        """DELETE /datasets/<id>: remove a dataset and its tensor file."""
        services.dataset_delete(dataset_id=check_object_id(dataset_id, "id"))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetSearchViewSet(viewsets.ViewSet):
    """The seed's discovery endpoints: which tags this node holds, and whether it holds a match."""

    content_negotiation_class = JSONResponses

    @extend_schema(
        operation_id="dataset_tags",
        summary="Every tag some dataset carries, sorted by code point, as a bare JSON array (group: read).",
        tags=["datasets"],
        responses={200: {"type": "array", "items": {"type": "string"}}, **errors(401)},
    )
    @requires(READ)
    def tags(self, request):
        """GET /dataset-tags: every tag some dataset carries, sorted, as a bare JSON array."""
        return Response(services.tag_names_in_use())

    @extend_schema(
        operation_id="search_datasets",
        summary='{"content": true} when one dataset matches every term: a tag, its id, or a substring of its'
        " description (group: read). The body is read as JSON whatever its Content-Type.",
        tags=["datasets"],
        request={"application/json": _SEARCH_BODY},
        examples=[OpenApiExample("Two tags", value={"query": ["#demo", "#train"]}, request_only=True)],
        responses={
            200: {"type": "object", "properties": {"content": {"type": "boolean"}}, "required": ["content"]},
            **errors(400, 401, 411, 413, e400=_INVALID_PAYLOAD),
        },
    )
    @requires(READ)
    def search(self, request):
        """POST /search {"query": [terms]}: {"content": true} when one dataset matches every term."""
        return Response({"content": services.datasets_search(terms=_search_terms(request))})


def _search_terms(request) -> list[str]:
    """The `query` of a search body, or the contract's one 400 for every malformed body."""
    # Grid gateways post this body with no Content-Type (requests' `data=json.dumps(...)`), so it is
    # read as JSON whatever its Content-Type says; DRF's parsers would see an empty body.
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        raise BadRequest(INVALID_PAYLOAD) from None
    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, list) or not query or not all(isinstance(term, str) for term in query):
        raise BadRequest(INVALID_PAYLOAD)
    return query


def _tags_field(data):
    """`tags` as a JSON list, or as repeated form/multipart fields."""
    if hasattr(data, "getlist"):
        return data.getlist("tags")
    return body_field(data, "tags")


def _staged_data(data) -> services.StagedTensor:
    """The one tensor in `data`: a multipart file, torch.save bytes under an `encoding`, or a JSON array."""
    value = body_field(data, "data")
    if value is None or value == "":
        raise BadRequest("'data' is required.")
    dtype = services.dtype_check(dtype=body_field(data, "dtype"))
    if is_upload(value):
        return services.tensor_stage(upload=value, dtype=dtype)
    encoding = parse_encoding(body_field(data, "encoding"), allow_json=True)
    if encoding != JSON:
        if not isinstance(value, str):
            raise BadRequest(f"'data' must be text under the {encoding} encoding.")
        return services.tensor_stage(content=decode_text(value, encoding, "data"), dtype=dtype)
    if isinstance(value, str):
        # Forms carry the JSON array as text.
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BadRequest("'data' is neither a JSON array nor text under an 'encoding'.") from None
    return services.tensor_stage_json(value=value, dtype=dtype)
