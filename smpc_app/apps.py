from django.apps import AppConfig


class SmpcAppConfig(AppConfig):
    """Encrypted (secret-shared) model registrations, their worker nodes, and this node's part of each."""

    name = "smpc_app"
    verbose_name = "Encrypted models"

    def ready(self) -> None:
        """Connect the clean-up that removes a deleted share's file."""
        from smpc_app import signals  # noqa: F401  (connects the storage clean-up of shares)
