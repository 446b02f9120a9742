"""The dataset endpoints: the seed's /dataset-tags and /search, and the REST resource that fills them."""

import json

from django.conf import settings
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
from gridnode.tensors import tensor_to_json
from gridnode.uploads import limit_file_parts

INVALID_PAYLOAD = "Invalid payload format"


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

    @requires(READ)
    def list(self, request):
        """GET /datasets: every dataset, or those carrying every `?tag=`, a page at a time."""
        datasets = services.dataset_list(tags=request.query_params.getlist("tag"))
        page = self.paginate_queryset(datasets)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @requires(READ)
    def retrieve(self, request, dataset_id):
        """GET /datasets/<id>: a dataset's metadata."""
        dataset = services.dataset_get(dataset_id=check_object_id(dataset_id, "id"))
        return Response(self.get_serializer(dataset).data)

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
        raw = services.dataset_bytes(dataset=dataset)
        return Response({"encoding": encoding, "data": encode_bytes(raw, encoding)})

    @requires(WRITE)
    def destroy(self, request, dataset_id):
        """DELETE /datasets/<id>: remove a dataset and its tensor file."""
        services.dataset_delete(dataset_id=check_object_id(dataset_id, "id"))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetSearchViewSet(viewsets.ViewSet):
    """The seed's discovery endpoints: which tags this node holds, and whether it holds a match."""

    content_negotiation_class = JSONResponses

    @requires(READ)
    def tags(self, request):
        """GET /dataset-tags: every tag some dataset carries, sorted, as a bare JSON array."""
        return Response(services.tag_names_in_use())

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
