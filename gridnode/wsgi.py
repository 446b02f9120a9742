"""WSGI entry point: `gunicorn gridnode.wsgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
application = get_wsgi_application()
