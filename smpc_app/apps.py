from django.apps import AppConfig


class SmpcAppConfig(AppConfig):
    """Encrypted (secret-shared) model registrations, their worker nodes, and this node's part of each."""

    name = "smpc_app"
    verbose_name = "Encrypted models"

    def ready(self) -> None:
        """Connect the receiver that keeps this process's copy of the trusted nodes in step with their rows."""
        from smpc_app import signals  # noqa: F401  (connects it)
