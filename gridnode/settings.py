"""Settings for the grid node, every knob read from the environment (docs/settings.md).

With no variables at all the node runs on SQLite and local files under `var/` in the checkout;
`DATABASE_URL=postgres://...` switches to PostgreSQL.
"""

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from gridnode.env import (
    env_bool,
    env_int,
    env_list,
    env_path,
    env_str,
    parse_database_url,
    persistent_secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# One folder holds every stored file and the default database.
DATA_DIR = env_path("GRIDNODE_DATA_DIR", BASE_DIR / "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_str("SECRET_KEY", "") or persistent_secret_key(DATA_DIR / "secret_key")
DEBUG = env_bool("DEBUG", False)
# A grid node is reached by other nodes under names it cannot know in advance.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's JS and CSS, served by the node itself (WhiteNoise): the UI works without internet access.
    "drf_spectacular_sidecar",
    # Not an app of its own: listed so Django finds `manage.py create_token` beside gridnode/auth.py.
    "gridnode",
    "models_app",
    "datasets_app",
    "smpc_app",
]

MIDDLEWARE = [
    # First, so it times the whole stack and sees the final status (docs/operations.md).
    "gridnode.observability.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gridnode.urls"
CSRF_FAILURE_VIEW = "gridnode.errors.csrf_failure"
WSGI_APPLICATION = "gridnode.wsgi.application"
# Seed paths answer with and without a trailing slash; a redirect would lose a POST body.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": parse_database_url(env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'gridnode.sqlite3'}")),
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("GRIDNODE_DB_CONN_MAX_AGE", 60)
    # A health check is one more round trip on every request (measured: half the time of an inference);
    # without it, a connection dropped by a database restart fails one request per worker, then reconnects.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("GRIDNODE_DB_HEALTH_CHECKS", False)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# The admin's CSS and JS are served by the node itself, with or without collectstatic.
WHITENOISE_USE_FINDERS = True

# Stored archives and tensors go through Django's storage API: under the data folder by default, or on an
# S3-compatible object store shared by every replica (GRIDNODE_STORAGE=s3, docs/deployment.md).
MEDIA_ROOT = DATA_DIR / "files"
GRIDNODE_STORAGE = env_str("GRIDNODE_STORAGE", "local").lower()
if GRIDNODE_STORAGE not in ("local", "s3"):
    raise ImproperlyConfigured(f"GRIDNODE_STORAGE is local (the default) or s3, not {GRIDNODE_STORAGE!r}.")
_default_storage: dict[str, Any] = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
# Path-style URLs (http://endpoint/bucket/key) suit SeaweedFS, MinIO and AWS alike; "virtual" for hosts that need it.
GRIDNODE_S3_ADDRESSING_STYLE = env_str("GRIDNODE_S3_ADDRESSING_STYLE", "path")
# Each replica's local copies of the archives its inference processes load (gridnode/objectstore.py).
GRIDNODE_ARCHIVE_CACHE_BYTES = env_int("GRIDNODE_ARCHIVE_CACHE_BYTES", 16 * 1024**3, minimum=0)
if GRIDNODE_STORAGE == "s3":
    _s3_bucket = env_str("GRIDNODE_S3_BUCKET", "")
    if not _s3_bucket:
        raise ImproperlyConfigured("GRIDNODE_STORAGE=s3 needs GRIDNODE_S3_BUCKET, the bucket that holds the files.")
    _s3_keys = (env_str("GRIDNODE_S3_ACCESS_KEY_ID", ""), env_str("GRIDNODE_S3_SECRET_ACCESS_KEY", ""))
    if bool(_s3_keys[0]) != bool(_s3_keys[1]):
        raise ImproperlyConfigured(
            "Set both GRIDNODE_S3_ACCESS_KEY_ID and GRIDNODE_S3_SECRET_ACCESS_KEY, or neither (boto3's own "
            "credentials: AWS_* variables, a profile, an instance role)."
        )
    if GRIDNODE_S3_ADDRESSING_STYLE not in ("path", "virtual", "auto"):
        raise ImproperlyConfigured("GRIDNODE_S3_ADDRESSING_STYLE is path, virtual or auto.")
    _default_storage = {
        "BACKEND": "gridnode.objectstore.ObjectStorage",
        "OPTIONS": {
            "bucket_name": _s3_bucket,
            "endpoint_url": env_str("GRIDNODE_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("GRIDNODE_S3_REGION", "") or None,
            "access_key": _s3_keys[0] or None,
            "secret_key": _s3_keys[1] or None,
            # Every file of the node under this prefix, so one bucket can hold several nodes.
            "location": env_str("GRIDNODE_S3_PREFIX", "").strip("/"),
            # Names are fresh uuids: no existence check before each write.
            "file_overwrite": True,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
STORAGES = {
    "default": _default_storage,
    # Readable by nginx's workers, which serve collectstatic's output (deploy/nginx.conf); uploads stay 0640.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage",
        "OPTIONS": {"file_permissions_mode": 0o644, "directory_permissions_mode": 0o755},
    },
}
# Uploads are staged on the same file system as the storage, so storing one is a rename.
FILE_UPLOAD_TEMP_DIR = DATA_DIR / "tmp"
FILE_UPLOAD_TEMP_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_PERMISSIONS = 0o640
FILE_UPLOAD_HANDLERS = [
    "gridnode.uploads.HashingMemoryFileUploadHandler",
    "gridnode.uploads.HashingTemporaryFileUploadHandler",
]

# Limits. JSON and form bodies are read into memory, so they have their own, smaller bound.
GRIDNODE_MAX_BODY_BYTES = env_int("GRIDNODE_MAX_BODY_BYTES", 512 * 1024**2, minimum=1024)
GRIDNODE_MAX_UPLOAD_BYTES = env_int("GRIDNODE_MAX_UPLOAD_BYTES", 4 * 1024**3, minimum=1024)
GRIDNODE_MAX_MODEL_BYTES = env_int("GRIDNODE_MAX_MODEL_BYTES", 2 * 1024**3, minimum=1024)
GRIDNODE_MAX_DATASET_BYTES = env_int("GRIDNODE_MAX_DATASET_BYTES", 1024**3, minimum=1024)
GRIDNODE_MAX_TAGS_PER_DATASET = env_int("GRIDNODE_MAX_TAGS_PER_DATASET", 100, minimum=1)
# Rows (the first dimension of every input) one inference may run: a small body can still ask a model for a
# batch whose activations fill the memory.
GRIDNODE_MAX_INFERENCE_BATCH = env_int("GRIDNODE_MAX_INFERENCE_BATCH", 1024, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = GRIDNODE_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# Threads torch may use per process; 0 leaves torch's default (one per core) to serving processes and
# gives each inference process its share of the cores (models_app/executor_pool.py).
GRIDNODE_TORCH_THREADS = env_int("GRIDNODE_TORCH_THREADS", 0)

# The longest an archive may take to load and pass its checks, in an inference process (models_app/archives.py
# load_seconds: 5 s plus a second per 10 MB, up to this).
GRIDNODE_LOAD_TIMEOUT = env_int("GRIDNODE_LOAD_TIMEOUT", 300, minimum=1)

# How many loaded models each process keeps in memory.
GRIDNODE_MODEL_CACHE_SIZE = env_int("GRIDNODE_MODEL_CACHE_SIZE", 16, minimum=1)

# Bounds on running a stranger's model (docs/security.md). Every inference runs in one of
# the node's inference processes (models_app/executor.py), which is killed and replaced when it runs past
# the deadline; its memory may grow by at most GRIDNODE_INFERENCE_MEMORY_BYTES while it runs, and the
# tensors it answers may hold at most GRIDNODE_MAX_ANSWER_BYTES.
GRIDNODE_INFERENCE_TIMEOUT = env_int("GRIDNODE_INFERENCE_TIMEOUT", 30, minimum=1)
GRIDNODE_INFERENCE_MEMORY_BYTES = env_int("GRIDNODE_INFERENCE_MEMORY_BYTES", 2 * 1024**3, minimum=16 * 1024**2)
GRIDNODE_MAX_ANSWER_BYTES = env_int("GRIDNODE_MAX_ANSWER_BYTES", 64 * 1024**2, minimum=1024)
# Inference processes per node (0: two more than the cores, so that two stuck models still leave every
# core a process for everyone else).
GRIDNODE_INFERENCE_PROCESSES = env_int("GRIDNODE_INFERENCE_PROCESSES", 0)
# The inference processes' memory allocator (models_app/executor_pool.py): "jemalloc" (Debian's libjemalloc2,
# which scripts/setup installs; where it is missing the processes use glibc's) or "glibc", tuned to keep the
# memory each inference uses again instead of faulting it in anew.
GRIDNODE_INFERENCE_ALLOCATOR = env_str("GRIDNODE_INFERENCE_ALLOCATOR", "jemalloc")
if GRIDNODE_INFERENCE_ALLOCATOR not in ("jemalloc", "glibc"):
    raise ImproperlyConfigured(
        f"GRIDNODE_INFERENCE_ALLOCATOR must be jemalloc or glibc, not {GRIDNODE_INFERENCE_ALLOCATOR!r}."
    )

# Encrypted inference (smpc_app, docs/encrypted-inference.md). Each node signs its requests to the others
# with its own key (GRIDNODE_DATA_DIR/smpc/node_key) and trusts theirs one by one (manage.py smpc_trust).
# The shared secret that came before would let any node speak for any other: refused, so it is noticed.
if env_str("GRIDNODE_SMPC_SECRET", ""):
    raise ImproperlyConfigured(
        "GRIDNODE_SMPC_SECRET is no longer used: nodes sign with their own keys. Unset it, run "
        "'manage.py smpc_identity' on each node and trust the others with 'manage.py smpc_trust add URL KEY'."
    )
# How long a worker waits for its peer or the crypto provider before giving up on a session (seconds).
GRIDNODE_SMPC_TIMEOUT = env_int("GRIDNODE_SMPC_TIMEOUT", 10, minimum=1)
# Evaluations one process runs at once (0: no bound, as under runserver, a thread per request); more get
# a 503 at once rather than taking the threads the running ones need for their exchanges.
GRIDNODE_SMPC_MAX_SESSIONS = env_int("GRIDNODE_SMPC_MAX_SESSIONS", 0)
# Where an encrypted inference's round messages meet the process that evaluates its session (smpc_app/broker.py):
# empty, a Unix socket on this host (every process of the node on one host); redis://, rediss:// or unix://
# a Redis that every replica of the node reaches, so exchanges may land on any replica (docs/deployment.md).
GRIDNODE_BROKER_URL = env_str("GRIDNODE_BROKER_URL", "")
if GRIDNODE_BROKER_URL and not GRIDNODE_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("GRIDNODE_BROKER_URL is a Redis URL (redis://, rediss:// or unix://), or empty.")

# Token auth per group of endpoints (docs/security.md). Open by default, as the seed says ("Auth required:
# NO (can be changed)"); each switch closes one group to requests without a valid `Authorization: Token`.
GRIDNODE_AUTH_READ = env_bool("GRIDNODE_AUTH_READ", False)
GRIDNODE_AUTH_WRITE = env_bool("GRIDNODE_AUTH_WRITE", False)
GRIDNODE_AUTH_INFERENCE = env_bool("GRIDNODE_AUTH_INFERENCE", False)
GRIDNODE_AUTH_DOWNLOAD = env_bool("GRIDNODE_AUTH_DOWNLOAD", False)
GRIDNODE_AUTH_METRICS = env_bool("GRIDNODE_AUTH_METRICS", False)

# Behind a reverse proxy that ends TLS: trust its X-Forwarded-Proto (the proxy must set it, overwriting any
# the client sent) and keep the admin's session and CSRF cookies off plain HTTP.
GRIDNODE_BEHIND_TLS_PROXY = env_bool("GRIDNODE_BEHIND_TLS_PROXY", False)
if GRIDNODE_BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# Origins (scheme://host[:port]) the admin's forms may be posted from when the proxy's public address is not
# the Host the node sees.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS entries start with http:// or https://, not {_origin!r}.")

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["gridnode.http.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "gridnode.http.FastJSONParser",
        "gridnode.http.BoundedMultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    # Tokens only (no session auth, so no CSRF on the API); each view declares its group (gridnode/auth.py).
    "DEFAULT_AUTHENTICATION_CLASSES": ["gridnode.auth.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["gridnode.auth.GroupPermission"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "gridnode.errors.handle_api_exception",
    "DEFAULT_SCHEMA_CLASS": "gridnode.schema.GridAutoSchema",
}

# The OpenAPI document at /api/schema/ and its UI at /api/schema/swagger-ui/ (docs/api.md).
SPECTACULAR_SETTINGS = {
    "TITLE": "Grid Node",
    "VERSION": "0.1.0",
    "DESCRIPTION": (
        "A grid node hosts PyTorch models and tagged datasets under rules their owners set. It speaks the HTTP"
        " contract of OpenMined's PyGrid grid node, pinned down in the project's docs/api.md, which wins where"
        " this document and it disagree. Every path also answers with a trailing slash; every error is JSON"
        ' `{"error": "..."}`.'
    ),
    # The document and its UI are in the read group (GRIDNODE_AUTH_READ), like every undeclared GET.
    "SERVE_PERMISSIONS": ["gridnode.auth.GroupPermission"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["gridnode.schema.one_spelling_per_route"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "gridnode.schema.add_plain_views"],
}

LOGGING_CONFIG = "gridnode.jsonlog.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "gridnode.jsonlog.JsonLineFormatter"}},
    "handlers": {
        # Every line the node writes is one JSON object: text from requests and models (a warning with a
        # newline, an exception message) stays inside its own line's string.
        "console": {"class": "logging.StreamHandler", "formatter": "json"},
        "json_console": {"class": "logging.StreamHandler", "formatter": "json"},
    },
    "root": {"handlers": ["console"], "level": env_str("GRIDNODE_LOG_LEVEL", "INFO").upper()},
    # One JSON line per request (method, path, route, status, duration_ms, model_id); level from the root.
    "loggers": {"gridnode.requests": {"handlers": ["json_console"], "propagate": False}},
}
