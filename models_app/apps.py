from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    """Hosted PyTorch models: archives, permissions, inference."""

    name = "models_app"
    verbose_name = "Hosted models"

    def ready(self) -> None:
        import torch
        from django.conf import settings

        if settings.GRIDNODE_TORCH_THREADS:
            torch.set_num_threads(settings.GRIDNODE_TORCH_THREADS)
