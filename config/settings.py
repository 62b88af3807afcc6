"""Parley's one settings module. Everything that differs between machines comes from the
environment through config.env; the README's configuration table lists every variable."""

import ipaddress
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from django.utils.translation import gettext_lazy as _

from config import embedded
from config.env import ImproperlyConfiguredEnv, database_config, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# Without DATABASE_URL / REDIS_URL this is a developer's machine: real servers are started
# from pip packages (config/embedded.py) and DEBUG defaults to on.
EXTERNAL_SERVICES = not any(embedded.wanted().values())
_embedded_urls = embedded.start()
DATABASE_URL = env_str("DATABASE_URL") or _embedded_urls["DATABASE_URL"]
REDIS_URL = env_str("REDIS_URL") or _embedded_urls["REDIS_URL"]

DEBUG = env_bool("DEBUG", default=not EXTERNAL_SERVICES)
SECRET_KEY = env_str("SECRET_KEY") or (
    "django-insecure-parley-development-key-never-use-in-production" if DEBUG else None
)
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")


def _derived_key(purpose: str) -> str:
    """A key for `purpose` derived from SECRET_KEY, used when none is configured."""
    import base64
    import hashlib

    digest = hashlib.sha256(f"parley:{purpose}:{SECRET_KEY}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


# Personal data at rest (apps/core/crypto.py): the first key encrypts, all decrypt.
ENCRYPTION_KEYS = env_list("ENCRYPTION_KEYS", [_derived_key("encryption")])
BLIND_INDEX_KEY = env_str("BLIND_INDEX_KEY", _derived_key("blind-index"))

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PUBLIC_URL = env_str("PUBLIC_URL", f"http://127.0.0.1:{env_int('PORT', 8000)}")
# The channel simulator (apps/connectors/simulator) that the demo's channels point at.
SIMULATOR_URL = env_str("SIMULATOR_URL", f"http://127.0.0.1:{env_int('SIMULATOR_PORT', 8025)}")
# Its mail servers, for the demo's email channels (SMTP out, IMAP for the polled mailbox).
SIMULATOR_SMTP_PORT = env_int("SIMULATOR_SMTP_PORT", 2525)
SIMULATOR_IMAP_PORT = env_int("SIMULATOR_IMAP_PORT", 1143)

INSTALLED_APPS = [
    "daphne",
    "apps.core.admin.ParleyAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "apps.core",
    "apps.workspaces",
    "apps.connectors",
    "apps.contacts",
    "apps.conversations",
    "apps.workflows",
    "apps.broadcasts",
    "apps.analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.core.idempotency.IdempotencyMiddleware",
    "apps.workspaces.middleware.UserPreferencesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"
AUTH_USER_MODEL = "workspaces.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.workspaces.context_processors.workspaces",
            ],
        },
    },
]

# Database -----------------------------------------------------------------------------------
DATABASES = {"default": database_config(DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL's JIT compiles a query's expressions when its estimated cost is high (a report's
# aggregates over months): 50 ms of compiling to save a few. Parley's queries are short; off.
_db_options = DATABASES["default"].setdefault("OPTIONS", {})
_db_options["options"] = f"{_db_options.get('options', '')} -c jit=off".strip()
# Parameters travel apart from the statement (server-side binding) and a statement a connection
# runs again and again is prepared once (psycopg's prepare_threshold), and after five runs
# PostgreSQL keeps one plan for it: the busy day's worker spent a tenth of its time quoting
# parameters into SQL text, and PostgreSQL parsed and planned the same few hundred statements
# 1,800 times a second. A kept plan is made without the parameters' values, so a condition a
# partial index depends on is written into the statement, not passed (the drainers' claim).
_db_options.setdefault("server_side_binding", True)
# Behind PgBouncer in transaction mode (before 1.21, or without max_prepared_statements), set
# DATABASE_PREPARE_THRESHOLD=0: a prepared statement lives on one server connection.
_db_options.setdefault("prepare_threshold", env_int("DATABASE_PREPARE_THRESHOLD", 5) or None)
WORKER_DATABASE_CONN_MAX_AGE = env_int("WORKER_DATABASE_CONN_MAX_AGE", 600)
# Threads (each with its own, kept connection) that store providers' webhooks in a web process
# (apps/connectors/views.webhook_asgi): the most connections webhooks take there, whatever the load.
WEBHOOK_DATABASE_CONNECTIONS = env_int("WEBHOOK_DATABASE_CONNECTIONS", 8)
# The most PostgreSQL connections one web process holds, those webhook threads' included: its
# requests and sockets borrow from a pool this size (config/asgi.py), waiting their turn when it
# is all lent, instead of each opening one of its own until the server refuses more.
WEB_DATABASE_CONNECTIONS = env_int("WEB_DATABASE_CONNECTIONS", WEBHOOK_DATABASE_CONNECTIONS + 12)
# How many worker processes apply stored webhooks at once (apps/conversations/services/messages.py).
INBOUND_DRAINERS = env_int("INBOUND_DRAINERS", 2)
# Two test runs on one server (two checkouts, say) each need their own test database.
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: one URL feeds the cache, the Channels layer and the Celery broker -------------------
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "parley")


def _celery_broker_url(redis_url: str) -> str:
    """Kombu names a unix-socket Redis `redis+socket://PATH?virtual_host=DB`."""
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    db = parse_qs(parts.query).get("db", ["0"])[-1]
    return f"redis+socket://{parts.path}?virtual_host={db}"


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s channels_redis
            # blocks in BZPOPMIN: the read then times out and kills the socket's consumer.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "prefix": f"{REDIS_KEY_PREFIX}:asgi",
            "capacity": 1000,
        },
    }
}

CELERY_BROKER_URL = _celery_broker_url(REDIS_URL)
# A dead worker's unacknowledged task is handed to another after visibility_timeout; it must
# exceed the longest retry countdown (5 minutes, apps/conversations/services.backoff).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{REDIS_KEY_PREFIX}:",
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600),
}
# A message left `sending` longer than this by a worker that died is failed for review.
OUTBOUND_CLAIM_TIMEOUT_SECONDS = env_int("OUTBOUND_CLAIM_TIMEOUT_SECONDS", 120)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "parley")
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged only when it finishes, so a worker killed mid-task leaves it queued
# for another worker; every task is written to be safe to run twice (see docs/architecture.md).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_PREFETCH_MULTIPLIER", 1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes every database connection around every task unless this is set,
# and then around every this-many-th: config/celery.py keeps them as Django does around requests.
CELERY_DB_REUSE_MAX = 1_000_000_000

# Auth and security --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Outbound requests to URLs that members configure or payloads name (workflow steps, webhooks, the
# order lookup, the custom channel, media downloads) never reach a loopback, private, link-local or
# reserved address (apps/core/netguard.py), except in these networks (CIDRs). In development the
# channel simulator listens on 127.0.0.1, so loopback is let through there.
OUTBOUND_ALLOWED_NETWORKS = env_list("OUTBOUND_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"] if DEBUG else [])
for _network in OUTBOUND_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"OUTBOUND_ALLOWED_NETWORKS: {_network!r} is not like 10.0.0.0/8") from None
# Files customers and agents send (apps/core/uploads.py): at most this big, whatever a channel allows.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)

LOGIN_FAILURE_LIMIT = env_str("LOGIN_FAILURE_LIMIT", "5/5m")
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "1200/min")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Content-Security-Policy (django-csp) on every response: scripts only from Parley's own files, no
# inline script, handler or eval, so text that slips past escaping still cannot run (docs/security.md).
# Styles allow inline: the dashboard's server-drawn SVG charts and the workflow diagram carry their
# own <style>, and admin pages set style attributes; CSS cannot run script.
_public = urlsplit(PUBLIC_URL)
_public_socket = f"{'wss' if _public.scheme == 'https' else 'ws'}://{_public.netloc}"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "media-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'", _public_socket, *env_list("CSP_CONNECT_SRC", [])],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.workspaces.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.api.permissions.IsWorkspaceMember"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.core.api.pagination.CursorPagination",
    # The API speaks JSON; endpoints that take files add multipart themselves.
    "DEFAULT_PARSER_CLASSES": ["apps.core.api.parsers.StrictJSONParser"],
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.api.throttling.PrincipalRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"principal": API_RATE_LIMIT},
    "EXCEPTION_HANDLER": "apps.core.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": (
        "Contacts, conversations, messages, orders, stock and webhooks of one workspace, chosen by the API "
        "token (`Authorization: Bearer <token>`). Errors are JSON `{code, detail, fields?}`; lists use cursor "
        "pagination; POSTs accept an `Idempotency-Key`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1/",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # the UI's assets come from Parley itself, never a CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ConversationStatusEnum": "apps.conversations.models.Conversation.Status",
        "OrderStatusEnum": "apps.contacts.models.Order.Status",
        "AgentPresenceEnum": "apps.workspaces.models.AgentStatus.Status",
        "TemplateStatusEnum": "apps.connectors.models.MessageTemplate.Status",
        "RunStateEnum": "apps.workflows.models.Run.State",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.api.schema.add_error_responses",
    ],
}

# Internationalisation -----------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ru", _("Russian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static and media ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on a missing folder
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
# In development and tests static files are served from the source folders; in production from
# `collectstatic`'s output, with hashed names so browsers may cache them forever.
STATIC_FROM_SOURCE = env_bool("STATIC_FROM_SOURCE", DEBUG)
# Attachments on local disk by default; on any S3-compatible store (AWS, MinIO, R2…) when a bucket
# is named. Files are always served through Parley's own views, which check membership.
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL", "") or None
AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME", "") or None
AWS_DEFAULT_ACL = None
AWS_QUERYSTRING_AUTH = True
STORAGES = {
    "default": {
        "BACKEND": "storages.backends.s3.S3Storage"
        if AWS_STORAGE_BUCKET_NAME
        else "django.core.files.storage.FileSystemStorage"
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if STATIC_FROM_SOURCE
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Scheduled analytics exports (apps/analytics/export.py): under MEDIA_ROOT/exports, or in a bucket
# of their own (ANALYTICS_EXPORT_BUCKET, same AWS_* credentials and endpoint), else the attachments'.
ANALYTICS_EXPORT_BUCKET = env_str("ANALYTICS_EXPORT_BUCKET", "") or AWS_STORAGE_BUCKET_NAME
STORAGES["exports"] = (
    {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": ANALYTICS_EXPORT_BUCKET}}
    if ANALYTICS_EXPORT_BUCKET
    else {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": MEDIA_ROOT / "exports"}}
)
WHITENOISE_USE_FINDERS = STATIC_FROM_SOURCE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own default handler would print each request warning a second time.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "pgserver": {"level": "WARNING"},
    },
}

# Presence: an agent whose browser has sent no heartbeat for this long is marked offline.
AGENT_PRESENCE_GRACE_SECONDS = env_int("AGENT_PRESENCE_GRACE_SECONDS", 120)
