"""Django settings for the StellaOps Orchestrator, read from environment variables only.

Two modes share this one module (``ORCH_MODE``):

* ``standalone`` (default): SQLite under ``ORCH_VAR_DIR``, in-memory channel layer, secrets
  generated once into ``ORCH_VAR_DIR`` (never used outside this mode), Celery tasks run by the
  embedded beat of ``manage.py standalone``.
* ``production``: PostgreSQL from ``ORCH_DATABASE_URL``, Redis broker, secrets required.

Every variable is documented in ``docs/configuration.md``.
"""
from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_choice, env_int, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
ORCH_MODE = env_choice("ORCH_MODE", "standalone", ("standalone", "production"))
STANDALONE = ORCH_MODE == "standalone"
VAR_DIR = Path(env_str("ORCH_VAR_DIR", str(BASE_DIR / "var")))


def _standalone_secret(filename: str) -> str:
    """Read or create a random secret in VAR_DIR: standalone mode only, never production."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


if STANDALONE:
    SECRET_KEY = env_secret("DJANGO_SECRET_KEY", None) or _standalone_secret("django-secret-key")
    ORCH_JWT_SECRET = env_secret("ORCH_JWT_SECRET", None) or _standalone_secret("jwt-secret")
else:
    SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
    ORCH_JWT_SECRET = env_secret("ORCH_JWT_SECRET")
if len(ORCH_JWT_SECRET) < 32:
    raise ImproperlyConfigured("ORCH_JWT_SECRET must be at least 32 characters (HS256 key)")

DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in env_str("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ledger",
    "quotas",
    "orchestrator",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if STANDALONE:
    # Serve the admin's static files without a web server in front (standalone only).
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    WHITENOISE_USE_FINDERS = True
    (VAR_DIR / "static").mkdir(parents=True, exist_ok=True)  # whitenoise warns if it is absent

ROOT_URLCONF = "orchestrator.urls"
WSGI_APPLICATION = "orchestrator.wsgi.application"
ASGI_APPLICATION = "orchestrator.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------------
# Why CONN_MAX_AGE defaults differ: under WSGI (gunicorn gthread) threads live long, so a
# persistent connection per thread is bounded and fast; under ASGI every request may run in a
# new thread, so persistent connections leak (measured: 119 left open). ORCH_DB_POOL=true turns
# on Django's psycopg pool, which requires CONN_MAX_AGE=0.
if STANDALONE and not env_str("ORCH_DATABASE_URL", None):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "orchestrator.sqlite3",
            # IMMEDIATE: a write transaction takes the write lock at BEGIN, so two claims never
            # deadlock upgrading read locks; WAL lets readers run beside the writer.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
else:
    _db = dj_database_url.parse(env_str("ORCH_DATABASE_URL"))
    if _db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("ORCH_DATABASE_URL must be a postgres:// URL outside standalone mode")
    _pool = env_bool("ORCH_DB_POOL", False)
    _db["CONN_MAX_AGE"] = 0 if _pool else env_int("ORCH_DB_CONN_MAX_AGE_SECONDS", 600, minimum=0)
    # Health checks cost a `SELECT 1` round trip per request (measured: -27 % bridge throughput,
    # docs/performance.md). Off by default: a connection that died fails one request, Django
    # then discards it, and runners retry (claim_id, idempotent ack/fail/release).
    _db["CONN_HEALTH_CHECKS"] = env_bool("ORCH_DB_HEALTH_CHECKS", False) and not _pool
    _db["OPTIONS"] = {
        "application_name": "stellaops-orchestrator",
        # Server-side binding plus a prepare threshold let psycopg prepare a statement run that
        # many times on a connection, so the hot claim/ack statements are planned once per
        # connection, not per call (planning the claim's lane probe costs ~3.5 ms at 50
        # tenants, more than running it). Django disables preparing unless asked; 0 turns it
        # off (needed behind a transaction-mode connection pooler such as PgBouncer < 1.21).
        "server_side_binding": env_bool("ORCH_DB_SERVER_SIDE_BINDING", True),
        "prepare_threshold": env_int("ORCH_DB_PREPARE_THRESHOLD", 5, minimum=0) or None,
    }
    if _pool:
        _db["OPTIONS"]["pool"] = {
            "min_size": env_int("ORCH_DB_POOL_MIN_SIZE", 2, minimum=1),
            "max_size": env_int("ORCH_DB_POOL_MAX_SIZE", 10, minimum=1),
            "timeout": env_int("ORCH_DB_POOL_TIMEOUT_SECONDS", 10, minimum=1),
        }
    _db["TEST"] = {"NAME": env_str("ORCH_TEST_DATABASE_NAME", "test_orchestrator")}
    DATABASES = {"default": _db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Request limits --------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("ORCH_REQUEST_MAX_BYTES", 1_048_576, minimum=1024)

# --- REST framework ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["orchestrator.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["orchestrator.api.auth.HasScope"],
    "DEFAULT_PARSER_CLASSES": ["orchestrator.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "orchestrator.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "StellaOps Orchestrator API",
    "DESCRIPTION": "Task Runner bridge (v1) and operator API. See docs/bridge-v1.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets ship with the package: /api/docs/ works offline (standalone, air gap).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "ledger.states.JobStatus"},
}

# --- Authentication (bearer JWT, local signer until the Authority integration) ---------------
ORCH_JWT_ISSUER = env_str("ORCH_JWT_ISSUER", "stellaops-orchestrator-local")
ORCH_JWT_AUDIENCE = env_str("ORCH_JWT_AUDIENCE", "stellaops-orchestrator")
ORCH_TENANT_CLAIM = env_str("ORCH_TENANT_CLAIM", "tenant")
ORCH_JWT_LEEWAY_SECONDS = env_int("ORCH_JWT_LEEWAY_SECONDS", 30, minimum=0, maximum=300)

# --- Leases, retries, claims ------------------------------------------------------------------
ORCH_LEASE_SECONDS = env_int("ORCH_LEASE_SECONDS", 30, minimum=5)
ORCH_LEASE_MIN_SECONDS = env_int("ORCH_LEASE_MIN_SECONDS", 5, minimum=1)
ORCH_LEASE_MAX_SECONDS = env_int("ORCH_LEASE_MAX_SECONDS", 600, minimum=5, maximum=7 * 86_400)
ORCH_HEARTBEAT_INTERVAL_SECONDS = env_int("ORCH_HEARTBEAT_INTERVAL_SECONDS", 10, minimum=1)
ORCH_CLAIM_MAX_WAIT_SECONDS = env_int("ORCH_CLAIM_MAX_WAIT_SECONDS", 30, minimum=0, maximum=60)
ORCH_CLAIM_MAX_JOBS = env_int("ORCH_CLAIM_MAX_JOBS", 100, minimum=1, maximum=1000)
ORCH_CLAIM_POLL_MIN_MS = env_int("ORCH_CLAIM_POLL_MIN_MS", 50, minimum=10)
ORCH_CLAIM_POLL_MAX_MS = env_int("ORCH_CLAIM_POLL_MAX_MS", 1000, minimum=10)
ORCH_RETRY_BASE_SECONDS = env_int("ORCH_RETRY_BASE_SECONDS", 2, minimum=0)
ORCH_RETRY_MAX_SECONDS = env_int("ORCH_RETRY_MAX_SECONDS", 300, minimum=1)
ORCH_MAX_ATTEMPTS_DEFAULT = env_int("ORCH_MAX_ATTEMPTS_DEFAULT", 5, minimum=1, maximum=100)
ORCH_PAYLOAD_MAX_BYTES = env_int("ORCH_PAYLOAD_MAX_BYTES", 262_144, minimum=1024)
ORCH_LOG_LINES_MAX_PER_JOB = env_int("ORCH_LOG_LINES_MAX_PER_JOB", 5000, minimum=10)
ORCH_REAPER_PERIOD_SECONDS = env_int("ORCH_REAPER_PERIOD_SECONDS", 5, minimum=1)
ORCH_SCHEDULER_TICK_SECONDS = env_int("ORCH_SCHEDULER_TICK_SECONDS", 1, minimum=1)
ORCH_SCHEDULES_TICK_SECONDS = env_int("ORCH_SCHEDULES_TICK_SECONDS", 1, minimum=1, maximum=60)
ORCH_BREAKER_TICK_SECONDS = env_int("ORCH_BREAKER_TICK_SECONDS", 1, minimum=1)
ORCH_QUEUE_FULL_RETRY_AFTER_SECONDS = env_int("ORCH_QUEUE_FULL_RETRY_AFTER_SECONDS", 5, minimum=1)
ORCH_BENCH_ENDPOINTS = env_bool("ORCH_BENCH_ENDPOINTS", False)

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("ORCH_CELERY_BROKER_URL", "memory://" if STANDALONE else "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The single source of the periodic schedule: Celery beat reads it in production, and the
# embedded beat of ``manage.py standalone`` reads the same table.
CELERY_BEAT_SCHEDULE = {
    "orch.leases.reap_expired": {
        "task": "orch.leases.reap_expired",
        "schedule": timedelta(seconds=ORCH_REAPER_PERIOD_SECONDS),
    },
    "orch.scheduler.tick": {
        "task": "orch.scheduler.tick",
        "schedule": timedelta(seconds=ORCH_SCHEDULER_TICK_SECONDS),
    },
    "orch.schedules.fire": {
        "task": "orch.schedules.fire",
        "schedule": timedelta(seconds=ORCH_SCHEDULES_TICK_SECONDS),
    },
    "orch.breakers.advance": {
        "task": "orch.breakers.advance",
        "schedule": timedelta(seconds=ORCH_BREAKER_TICK_SECONDS),
    },
}

# --- Channels ---------------------------------------------------------------------------------
if STANDALONE:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [env_str("ORCH_REDIS_URL", "redis://127.0.0.1:6379/1")]},
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("ORCH_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # One line per beat task run is noise at INFO (every second in standalone).
        "celery.app.trace": {"level": "WARNING"},
    },
}
