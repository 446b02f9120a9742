"""The dataset endpoints: the seed's /dataset-tags and /search, and the REST resource that fills them."""

import json

import orjson
from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import pagination, status, viewsets
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.response import Response

from datasets_app import services
from datasets_app.serializers import INVALID_PAYLOAD, CreateDatasetBody, DatasetSerializer, SearchBody
from gridnode.auth import DOWNLOAD, READ, WRITE, requires
from gridnode.errors import BadRequest
from gridnode.http import JSON, LATIN1, check_object_id, encode_bytes, is_upload, parse_encoding
from gridnode.schema import EXAMPLE_DATASET_ID, errors, id_parameter
from gridnode.tensors import tensor_to_json
from gridnode.uploads import limit_file_parts

_DATASET_ID = id_parameter("dataset_id", EXAMPLE_DATASET_ID, "The dataset's id")
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
        request=CreateDatasetBody,
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
        body = CreateDatasetBody.parse(request.data)
        if body["id"] is not None:
            services.dataset_id_available(dataset_id=body["id"])
        dataset = services.dataset_create(
            dataset_id=body["id"],
            tags=body["tags"],
            description=body["description"],
            allow_download=body["allow_download"],
            staged=_staged_tensor(body["data"], dtype=body["dtype"]),
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
        request=SearchBody,
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
    return SearchBody.parse(body)["query"]


def _staged_tensor(data, *, dtype: str | None) -> services.StagedTensor:
    """The body's tensor (CreateDatasetBody.data) checked and staged: a file part, torch.save bytes, or
    a JSON array."""
    if is_upload(data):
        return services.tensor_stage(upload=data, dtype=dtype)
    if isinstance(data, bytes):
        return services.tensor_stage(content=data, dtype=dtype)
    return services.tensor_stage_json(value=data, dtype=dtype)
