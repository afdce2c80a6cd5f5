"""Canonical JSON and digests, used to compare enqueue bodies under an idempotency key."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Serialize ``value`` with sorted keys and no insignificant whitespace (RFC 8785 in spirit;
    numbers keep Python's repr, which is stable for the ints and floats JSON decoding yields)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """Return the lowercase hex sha256 of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
