"""Test settings: the production settings module on the local PostgreSQL, with test secrets.

Values are defaults only: the environment still wins (e.g. another ORCH_DATABASE_URL).
"""
import os

os.environ.setdefault("ORCH_MODE", "production")
os.environ.setdefault("ORCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orchestrator")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-django-secret-key-0123456789abcdefghij")
os.environ.setdefault("ORCH_JWT_SECRET", "test-only-jwt-secret-0123456789abcdefghijklmnop")
os.environ.setdefault("ORCH_CLAIM_POLL_MAX_MS", "200")

from orchestrator.settings import *  # noqa: E402,F403

if os.environ.get("ORCH_TEST_SQLITE") == "true":
    # The portable path (standalone mode's SQLite) under the same behaviour tests.
    DATABASES = {  # noqa: F405 (star import above)
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(os.environ.get("TMPDIR", "/tmp"), "orch-test-main.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30,
                        "init_command": "PRAGMA journal_mode=WAL;"},
            "TEST": {"NAME": os.path.join(os.environ.get("TMPDIR", "/tmp"), "orch-test.sqlite3")},
        }
    }
