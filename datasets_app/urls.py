"""This app's routes; gridnode/urls.py mounts them at the root."""

urlpatterns: list = []
