"""`manage.py smpc_trust add URL KEY | remove URL | list`: the nodes this node trusts with encrypted models."""

from django.core.management.base import BaseCommand, CommandError

from gridnode.errors import GridError
from smpc_app import trust
from smpc_app.models import TrustedNode


class Command(BaseCommand):
    help = (
        "Trust another node for encrypted inference by its address and public key (what 'manage.py smpc_identity' "
        "prints there), stop trusting one, or list them. The admin (Trusted nodes) does the same."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Trust the node at URL, whose public key is KEY.")
        add.add_argument("url")
        add.add_argument("public_key")
        add.add_argument("--label", default="", help="A name for operators.")
        remove = actions.add_parser("remove", help="Stop trusting the node at URL.")
        remove.add_argument("url")
        actions.add_parser("list", help="Every trusted node: URL, public key, label.")

    def handle(self, *args, action, **options):
        try:
            if action == "add":
                node = trust.trusted_node_add(
                    url=options["url"], public_key=options["public_key"], label=options["label"]
                )
                self.stdout.write(f"Trusted {node.url} ({node.public_key}).")
            elif action == "remove":
                trust.trusted_node_remove(url=options["url"])
                self.stdout.write("Removed.")
            else:
                for node in TrustedNode.objects.all():
                    self.stdout.write(f"{node.url} {node.public_key} {node.label}".rstrip())
        except GridError as exc:
            raise CommandError(exc.message) from None
