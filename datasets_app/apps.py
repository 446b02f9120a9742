from django.apps import AppConfig


class DatasetsAppConfig(AppConfig):
    """Tagged datasets that others can search for."""

    name = "datasets_app"
    verbose_name = "Datasets"

    def ready(self) -> None:
        from datasets_app import signals  # noqa: F401  (connects the storage clean-up)
