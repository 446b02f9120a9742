"""WSGI entry point: `gunicorn gridnode.wsgi`, Django behind the inference and SMPC-exchange fast paths.

Django's requests pass `WholeBodies` (gridnode/uploads.py): bodies are read whole or refused, and
staged upload parts go with their request.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
django_application = get_wsgi_application()

from gridnode.uploads import WholeBodies  # noqa: E402  (needs Django set up first)
from models_app.fastpath import InferenceFastPath  # noqa: E402
from smpc_app.fastpath import SessionExchangeFastPath  # noqa: E402

application = InferenceFastPath(SessionExchangeFastPath(WholeBodies(django_application)))
