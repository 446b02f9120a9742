"""WSGI entry point: `gunicorn gridnode.wsgi`, Django behind the inference fast path."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
django_application = get_wsgi_application()

from models_app.fastpath import InferenceFastPath  # noqa: E402  (needs Django set up first)

application = InferenceFastPath(django_application)
