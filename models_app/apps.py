from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    """Hosted PyTorch models: archives, permissions, inference."""

    name = "models_app"
    verbose_name = "Hosted models"

    def ready(self) -> None:
        from models_app import signals  # noqa: F401  (connects the storage clean-up)
