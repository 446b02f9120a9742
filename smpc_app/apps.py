from django.apps import AppConfig


class SmpcAppConfig(AppConfig):
    """Encrypted (secret-shared) model registrations and their worker nodes."""

    name = "smpc_app"
    verbose_name = "Encrypted models"
