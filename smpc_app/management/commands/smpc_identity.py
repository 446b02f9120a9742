"""`manage.py smpc_identity`: make this node's Ed25519 key pair if it has none, and print its public key."""

from django.core.management.base import BaseCommand

from smpc_app.identity import key_path, load_or_create


class Command(BaseCommand):
    help = (
        "Print this node's public key for encrypted inference (other nodes trust it with "
        "'manage.py smpc_trust add URL KEY'), making the key pair in GRIDNODE_DATA_DIR/smpc/node_key if needed."
    )

    def handle(self, *args, **options):
        path = key_path()
        identity, created = load_or_create(path)
        if created:
            self.stderr.write(f"Made this node's key pair in {path} (keep that file private; back it up).")
        self.stdout.write(identity.public_key)
