"""Open Inference Protocol (KServe v2) paths, each with and without a trailing slash.

A model path may name the model's version (`/v2/models/<id>/versions/1/...`), as v2 clients do when
asked to; hosted models have the one version "1".
"""

from django.urls import re_path

from gridnode import health
from models_app.v2_views import OpenInferenceViewSet

MODEL = r"v2/models/(?P<model_id>[^/]+)(?:/versions/(?P<version>[^/]+))?"

server_metadata = OpenInferenceViewSet.as_view({"get": "server_metadata"})
model_metadata = OpenInferenceViewSet.as_view({"get": "model_metadata"})
model_ready = OpenInferenceViewSet.as_view({"get": "model_ready"})
infer = OpenInferenceViewSet.as_view({"post": "infer"})

urlpatterns = [
    re_path(r"^v2/?$", server_metadata, name="v2-server-metadata"),
    re_path(r"^v2/health/live/?$", health.v2_live, name="v2-health-live"),
    re_path(r"^v2/health/ready/?$", health.v2_ready, name="v2-health-ready"),
    re_path(rf"^{MODEL}/?$", model_metadata, name="v2-model-metadata"),
    re_path(rf"^{MODEL}/ready/?$", model_ready, name="v2-model-ready"),
    re_path(rf"^{MODEL}/infer/?$", infer, name="v2-model-infer"),
]
