"""The seed's model endpoints: parse the request, call a service, answer in the contract's shape."""

import json

import torch
from django.http import FileResponse
from rest_framework import renderers, viewsets
from rest_framework.response import Response

from gridnode.errors import BadRequest, GridError
from gridnode.http import (
    JSON,
    LATIN1,
    FastJSONRenderer,
    body_field,
    check_object_id,
    decode_text,
    encode_bytes,
    is_upload,
    parse_bool,
    parse_encoding,
)
from gridnode.tensors import dump_tensors, load_tensors, tensor_from_json, tensor_to_json
from models_app import services
from models_app.archives import JIT, PLAN, LoadedModel


class ArchiveRenderer(renderers.BaseRenderer):
    """Lets `Accept: application/octet-stream` select the raw archive download."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class HostedModelViewSet(viewsets.ViewSet):
    """Serve, list, delete, download and run the models hosted on this node."""

    renderer_classes = [FastJSONRenderer, ArchiveRenderer]

    def serve(self, request):
        """POST /serve-model: store a TorchScript or torch.export archive under a new id."""
        data = request.data
        model_id = check_object_id(body_field(data, "model_id"), "model_id")
        allow_download = parse_bool(body_field(data, "allow_download"), "allow_download")
        allow_remote_inference = parse_bool(body_field(data, "allow_remote_inference"), "allow_remote_inference")
        model_type = body_field(data, "model_type")
        if model_type not in (None, "", JIT, PLAN):
            raise BadRequest("'model_type' must be jit or plan.")
        model = body_field(data, "model")
        if model is None or model == "":
            raise BadRequest("'model' is required.")
        services.model_id_available(model_id=model_id)
        if is_upload(model):
            staged = services.archive_stage(upload=model, model_type=model_type)
        elif isinstance(model, str):
            encoding = parse_encoding(body_field(data, "encoding"), allow_json=False)
            if not encoding:
                raise BadRequest("'model' sent as text needs an 'encoding' (ISO-8859-1 or base64).")
            staged = services.archive_stage(content=decode_text(model, encoding, "model"), model_type=model_type)
        else:
            raise BadRequest("'model' must be text under an 'encoding', or a multipart file part.")
        services.model_serve(
            model_id=model_id,
            staged=staged,
            allow_download=allow_download,
            allow_remote_inference=allow_remote_inference,
        )
        return Response({"success": True, "message": f"Model saved with id: {model_id}"})

    def remove(self, request):
        """POST /delete-model: remove a model and its archive."""
        model_id = check_object_id(body_field(request.data, "model_id"), "model_id")
        services.model_delete(model_id=model_id)
        return Response({"success": True, "message": "Model deleted with success!"})

    def list(self, request):
        """GET /models: the ids of every hosted model."""
        return Response({"success": True, "models": services.model_ids()})

    def copy_allowed(self, request, model_id):
        """GET /is_model_copy_allowed/<id>: whether the owner lets others download the model."""
        try:
            services.model_for_download(model_id=check_object_id(model_id, "model_id"))
        except GridError as exc:
            exc.fields["success"] = False
            raise
        return Response({"success": True})

    def download(self, request, model_id):
        """GET /get_model/<id>: the archive, as text in JSON or raw with Accept: application/octet-stream."""
        hosted = services.model_for_download(model_id=check_object_id(model_id, "model_id"))
        if request.accepted_renderer.format == ArchiveRenderer.format:
            suffix = ".pt2" if hosted.kind == PLAN else ".pt"
            return FileResponse(hosted.archive.open("rb"), as_attachment=True, filename=f"{hosted.model_id}{suffix}")
        encoding = parse_encoding(request.query_params.get("encoding") or LATIN1, allow_json=False)
        with hosted.archive.open("rb") as stored:
            raw = stored.read()
        return Response({"serialized_model": encode_bytes(raw, encoding)})

    def infer(self, request, model_id):
        """POST /model/<id>: run the model on the caller's data and answer its prediction."""
        try:
            loaded = services.model_for_inference(model_id=check_object_id(model_id, "model_id"))
            data = request.data
            all_outputs = parse_bool(body_field(data, "all_outputs"), "all_outputs")
            inputs, encoding = _inference_inputs(data, loaded)
            output = loaded.run(inputs, all_outputs=all_outputs)
            prediction = _prediction(output, encoding)
        except GridError as exc:
            exc.fields.update(success=False, status=False)
            raise
        return Response({"success": True, "status": True, "prediction": prediction})


def _inference_inputs(data, loaded: LoadedModel) -> tuple[list, str]:
    """The model's input tensors from `data`, and the encoding the prediction should answer in."""
    value = body_field(data, "data")
    if value is None or value == "":
        raise BadRequest("'data' is required.")
    encoding = parse_encoding(body_field(data, "encoding"), allow_json=True)
    if is_upload(value):
        return _as_inputs(load_tensors(value.read(), "data")), encoding if encoding != JSON else LATIN1
    if encoding != JSON:
        if not isinstance(value, str):
            raise BadRequest(f"'data' must be text under the {encoding} encoding.")
        return _as_inputs(load_tensors(decode_text(value, encoding, "data"), "data")), encoding
    if isinstance(value, str):
        # Forms carry the JSON array as text.
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRequest("'data' is neither a JSON array nor text under an 'encoding'.") from None
    # JSON numbers carry no dtype: follow the archive's declared input dtypes (torch.export states
    # them), else float32, what models take far more often than integers.
    dtypes = [dtype or torch.float32 for dtype in loaded.input_dtypes]
    if loaded.input_count > 1:
        if not isinstance(value, list) or len(value) != loaded.input_count:
            raise BadRequest(
                f"This model takes {loaded.input_count} inputs: send 'data' as a list of that many arrays."
            )
        tensors = [tensor_from_json(item, "data", dtype) for item, dtype in zip(value, dtypes, strict=True)]
    else:
        tensors = [tensor_from_json(value, "data", dtypes[0] if dtypes else torch.float32)]
    return tensors, JSON


def _as_inputs(value) -> list:
    return value if isinstance(value, list) else [value]


def _prediction(output, encoding: str):
    """The model's output in the form the data came in: nested JSON lists or encoded torch.save bytes."""
    if encoding == JSON:
        try:
            return tensor_to_json(output)
        except TypeError:
            raise BadRequest("The model's output is not tensors, so it cannot be sent as JSON.") from None
    return encode_bytes(dump_tensors(output), encoding)
