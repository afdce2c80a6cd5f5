"""Strict readers for settings that come from environment variables.

Every reader raises ``ImproperlyConfigured`` on a malformed value at start-up, so a typo never
silently falls back to a default. Secrets may come from ``<NAME>_FILE`` (the file's content,
stripped), which is how container secrets are usually mounted.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_MISSING = object()


def _raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    value = env.get(name)
    return None if value is None or value == "" else value


def env_str(name: str, default: str | None | object = _MISSING, *,
            environ: Mapping[str, str] | None = None) -> str:
    """Return ``name`` as a string; ``default`` when unset; raise if unset and no default."""
    value = _raw(name, environ)
    if value is None:
        if default is _MISSING:
            raise ImproperlyConfigured(f"{name} must be set")
        return default  # type: ignore[return-value]
    return value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    """Return ``name`` as a boolean: only ``true`` and ``false`` (any case) are accepted."""
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ImproperlyConfigured(f"{name} must be 'true' or 'false', not {value!r}")
    return lowered == "true"


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None,
            environ: Mapping[str, str] | None = None) -> int:
    """Return ``name`` as an integer within ``[minimum, maximum]``; the unit lives in the name."""
    value = _raw(name, environ)
    if value is None:
        result = default
    else:
        try:
            result = int(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {result}")
    return result


def env_choice(name: str, default: str, choices: tuple[str, ...], *,
               environ: Mapping[str, str] | None = None) -> str:
    """Return ``name`` if it is one of ``choices``."""
    value = _raw(name, environ) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def env_secret(name: str, default: str | None | object = _MISSING, *,
               environ: Mapping[str, str] | None = None) -> str:
    """Return a secret from ``name`` or from the file named by ``<name>_FILE``."""
    value = _raw(name, environ)
    path = _raw(f"{name}_FILE", environ)
    if value is not None and path is not None:
        raise ImproperlyConfigured(f"set only one of {name} and {name}_FILE")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc}") from None
    return env_str(name, default, environ=environ)
