"""`manage.py create_token USERNAME`: print the user's API token, making it (and the user) when asked."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "Print USERNAME's API token (sent as 'Authorization: Token <key>'), creating it if the user has none. "
        "Tokens are also managed in the admin (Auth Token > Tokens)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the user if it does not exist (with no password: it can use its token, not the admin).",
        )
        parser.add_argument(
            "--regenerate", action="store_true", help="Replace an existing token; the old key stops working at once."
        )

    def handle(self, *args, username, create_user, regenerate, **options):
        User = get_user_model()
        with transaction.atomic():
            try:
                user = User.objects.get_by_natural_key(username)
            except User.DoesNotExist:
                if not create_user:
                    raise CommandError(f"No user named {username!r}: pass --create-user to create one.") from None
                user = User(**{User.USERNAME_FIELD: username})
                user.set_unusable_password()
                try:
                    user.full_clean(exclude=["password"])
                except ValidationError as exc:
                    raise CommandError(" ".join(exc.messages)) from None
                user.save()
            if not user.is_active:
                raise CommandError(f"User {username!r} is inactive: its token would be refused.")
            if regenerate:
                Token.objects.filter(user=user).delete()
            token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
