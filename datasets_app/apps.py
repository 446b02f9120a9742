from django.apps import AppConfig


class DatasetsAppConfig(AppConfig):
    """Tagged datasets that others can search for."""

    name = "datasets_app"
    verbose_name = "Datasets"
