"""The dataset paths of api.md and the seed, each with and without a trailing slash."""

from django.urls import re_path

from datasets_app.views import DatasetSearchViewSet, DatasetViewSet

DATASET_ID = r"(?P<dataset_id>[^/]+)"

collection = DatasetViewSet.as_view({"get": "list", "post": "create"})
member = DatasetViewSet.as_view({"get": "retrieve", "delete": "destroy"})
download = DatasetViewSet.as_view({"get": "download"})
dataset_tags = DatasetSearchViewSet.as_view({"get": "tags"})
search = DatasetSearchViewSet.as_view({"post": "search"})

urlpatterns = [
    re_path(r"^datasets/?$", collection, name="datasets"),
    re_path(rf"^datasets/{DATASET_ID}/data/?$", download, name="dataset-data"),
    re_path(rf"^datasets/{DATASET_ID}/?$", member, name="dataset"),
    re_path(r"^dataset-tags/?$", dataset_tags, name="dataset-tags"),
    re_path(r"^search/?$", search, name="search"),
]
