"""The seed's model paths and the older spellings of api.md, each with and without a trailing slash."""

from django.urls import re_path

from models_app.views import HostedModelViewSet

MODEL_ID = r"(?P<model_id>[^/]+)"

serve = HostedModelViewSet.as_view({"post": "serve"})
delete = HostedModelViewSet.as_view({"post": "remove"})
listing = HostedModelViewSet.as_view({"get": "list"})
copy_allowed = HostedModelViewSet.as_view({"get": "copy_allowed"})
download = HostedModelViewSet.as_view({"get": "download"})
infer = HostedModelViewSet.as_view({"post": "infer"})

urlpatterns = [
    re_path(r"^serve-model/?$", serve, name="serve-model"),
    # PySyft 0.2.8-0.2.9's DataCentricFLClient, and its later spelling.
    re_path(r"^data_centric/serve-model/?$", serve, name="serve-model-data-centric"),
    re_path(r"^data-centric/serve-model/?$", serve, name="serve-model-data-centric-dash"),
    re_path(r"^delete-model/?$", delete, name="delete-model"),
    re_path(r"^delete_model/?$", delete, name="delete-model-alias"),
    re_path(r"^models/?$", listing, name="models"),
    re_path(rf"^is_model_copy_allowed/{MODEL_ID}/?$", copy_allowed, name="is-model-copy-allowed"),
    re_path(rf"^get_model/{MODEL_ID}/?$", download, name="get-model"),
    re_path(rf"^model/{MODEL_ID}/?$", infer, name="model-inference"),
    re_path(rf"^models/{MODEL_ID}/?$", infer, name="model-inference-alias"),
]
