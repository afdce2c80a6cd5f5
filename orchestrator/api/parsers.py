"""A strict JSON parser: size-bounded, UTF-8 only, no NaN/Infinity, no NUL or lone surrogates.

PostgreSQL's jsonb cannot store ``\\u0000`` and UTF-8 cannot carry lone surrogates, so such
input would otherwise fail deep in the database as a 500; it is refused here with a 400.
"""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import BaseParser

from .errors import ApiError

MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing duplicate keys (RFC 8259 leaves them undefined)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return result


def check_text(value: str) -> None:
    """Raise a 400 ``invalid_characters`` if ``value`` holds NUL or cannot be UTF-8 encoded."""
    if "\x00" in value:
        raise exceptions.ValidationError("strings must not contain NUL (\\u0000) characters",
                                         code="invalid_characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise exceptions.ValidationError("strings must not contain lone surrogates",
                                         code="invalid_characters") from None


def check_tree(value: Any) -> None:
    """Walk decoded JSON: every key and string must pass ``check_text``; depth <= MAX_DEPTH."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise exceptions.ValidationError(f"JSON nested deeper than {MAX_DEPTH} levels",
                                             code="too_deep")
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


class StrictJSONParser(BaseParser):
    """``application/json`` bodies: a JSON object, within ORCH_REQUEST_MAX_BYTES."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ApiError(413, "request_too_large",
                           f"the request body exceeds {limit} bytes", {"limit_bytes": limit})
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.ParseError("the body is not valid UTF-8") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
        except RecursionError:
            raise exceptions.ParseError("JSON nested too deeply") from None
        except ValueError as exc:
            raise exceptions.ParseError(f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise exceptions.ParseError("the body must be a JSON object")
        check_tree(data)
        return data
