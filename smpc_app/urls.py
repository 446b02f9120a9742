"""The encrypted-model paths of api.md (with this node's share of each) and the seed's search, each with and
without a trailing slash."""

from django.urls import re_path

from smpc_app.registration_views import EncryptedModelViewSet
from smpc_app.runtime_views import EncryptedInferenceViewSet
from smpc_app.share_views import EncryptedModelShareViewSet

MODEL_ID = r"(?P<model_id>[^/]+)"

collection = EncryptedModelViewSet.as_view({"get": "list", "post": "create"})
registration = EncryptedModelViewSet.as_view({"get": "retrieve", "delete": "destroy"})
search = EncryptedModelViewSet.as_view({"post": "search"})
share = EncryptedModelShareViewSet.as_view(
    {"post": "create", "get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
share_data = EncryptedModelShareViewSet.as_view({"get": "data"})
evaluate = EncryptedInferenceViewSet.as_view({"post": "evaluate"})
deal = EncryptedInferenceViewSet.as_view({"post": "deal"})
exchange = EncryptedInferenceViewSet.as_view({"post": "exchange"})

urlpatterns = [
    re_path(r"^encrypted-models/?$", collection, name="encrypted-models"),
    re_path(rf"^encrypted-models/{MODEL_ID}/?$", registration, name="encrypted-model"),
    re_path(rf"^encrypted-models/{MODEL_ID}/share/?$", share, name="encrypted-model-share"),
    re_path(rf"^encrypted-models/{MODEL_ID}/share/data/?$", share_data, name="encrypted-model-share-data"),
    re_path(rf"^encrypted-models/{MODEL_ID}/inference/?$", evaluate, name="encrypted-model-inference"),
    re_path(rf"^encrypted-models/{MODEL_ID}/randomness/?$", deal, name="encrypted-model-randomness"),
    re_path(r"^smpc/exchange/?$", exchange, name="smpc-exchange"),
    re_path(r"^search-encrypted-models/?$", search, name="search-encrypted-models"),
]
