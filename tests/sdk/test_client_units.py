"""Unit tests of the worker SDK that need no server at all: backoff arithmetic and pure
parsing/cleaning helpers.

Everything that talks to the orchestrator (requests, error mapping of its answers,
retries, the Worker) is tested against the real server in ``test_worker_live.py``.
"""

from __future__ import annotations

import os
import random
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from stellaops_worker import (
    ApiError,
    Backoff,
    Client,
    ProtocolError,
    RateLimited,
    ServerError,
    TransportError,
    error_from_response,
    full_jitter_delay,
    is_retryable,
    token_from_file,
)
from stellaops_worker.client import (
    _parse_lease,
    _parse_retry_after,
    _truncate_chars,
    _truncate_utf8,
)
from stellaops_worker.worker import _backoff_curve, _error_code, _retry_after

pytestmark: list[pytest.MarkDecorator] = []


def lease_json(**over: Any) -> dict[str, Any]:
    lease = {
        "lease_id": "3f0c8e0a-0000-4000-8000-000000000001",
        "job_id": 7,
        "fencing_token": 3,
        "job_type": "demo.echo",
        "tenant": "acme",
        "project": "default",
        "source": None,
        "payload": {"x": 1},
        "idempotency_key": None,
        "correlation_id": "corr-1",
        "attempt": 1,
        "max_attempts": 3,
        "lease_seconds": 60,
        "lease_expires_at": "2026-01-01T00:01:00Z",
        "heartbeat_interval_seconds": 20,
        "retry_hint": {"backoff_seconds": 2, "attempts_left": 2},
    }
    lease.update(over)
    return lease


# -- backoff ----------------------------------------------------------------------------


def test_full_jitter_delay_stays_within_the_capped_exponential_window() -> None:
    rng = random.Random(42)
    for attempt in range(0, 12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        for _ in range(200):
            delay = full_jitter_delay(attempt, 0.5, 30.0, rng)
            assert 0.0 <= delay <= ceiling


def test_full_jitter_delay_spreads_over_the_whole_window() -> None:
    rng = random.Random(7)
    delays = [full_jitter_delay(10, 1.0, 8.0, rng) for _ in range(2000)]
    assert max(delays) > 7.0 and min(delays) < 1.0  # full jitter, not "equal jitter"


def test_backoff_counts_attempts_and_resets() -> None:
    backoff = Backoff(1.0, 4.0, rng=random.Random(1))
    for expected_ceiling in (1.0, 2.0, 4.0, 4.0, 4.0):
        assert backoff.next_delay() <= expected_ceiling
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.attempt == 0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert 0.0 <= full_jitter_delay(10_000, 1.0, 5.0) <= 5.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_rejects_nonsense_curves(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap)


@pytest.mark.parametrize(
    ("base", "cap", "expected"),
    [(2, 300, (2.0, 300.0)), (0, 300, (0.1, 300.0)), (0, 0, (0.1, 0.1)), (5, 1, (5.0, 5.0))],
)
def test_the_servers_backoff_curve_is_floored_not_refused(
    base: float, cap: float, expected: tuple[float, float]
) -> None:
    # ORCH_RETRY_BASE_SECONDS=0 is a valid server setting: runner-config then says base 0.
    config: Any = {"backoff": {"base_seconds": base, "max_seconds": cap, "jitter": "full"}}
    assert _backoff_curve(config) == expected
    Backoff(*_backoff_curve(config))  # a curve Backoff accepts


# -- parsing answers --------------------------------------------------------------------------


def test_lease_without_heartbeat_interval_is_a_protocol_error() -> None:
    bad = lease_json()
    del bad["heartbeat_interval_seconds"]
    with pytest.raises(ProtocolError):
        _parse_lease(bad)
    with pytest.raises(ProtocolError):
        _parse_lease(lease_json(attempt=True))  # a boolean is not an integer
    parsed = _parse_lease(lease_json(payload=None, retry_hint=None))
    assert parsed["payload"] == {} and parsed["retry_hint"] == {}


def test_retry_after_header_is_parsed_as_seconds() -> None:
    assert _parse_retry_after("7") == 7.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _parse_retry_after("soon") is None and _parse_retry_after(None) is None


def test_answers_of_a_proxy_or_gateway_map_to_retryable_errors() -> None:
    """Our server never answers 429 or 5xx pages itself; a proxy in front of it may."""
    page = error_from_response(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert isinstance(page, ServerError) and page.code == "http_502"
    assert "Bad gateway" in page.message and is_retryable(page)
    throttled = error_from_response(httpx.Response(429, headers={"Retry-After": "7"}))
    assert isinstance(throttled, RateLimited) and throttled.retry_after_seconds == 7.0
    assert type(error_from_response(httpx.Response(418))) is ApiError
    assert is_retryable(TransportError("down"))


# -- cleaning what is sent ----------------------------------------------------------------------


def test_text_is_made_sendable_and_cut() -> None:
    assert _truncate_utf8("a\x00b\udcffc", 100) == "a\ufffdb\ufffdc"
    cut = _truncate_utf8("é" * 10_000, 8192)  # 20,000 bytes of UTF-8
    assert len(cut.encode()) <= 8192 and cut.endswith("...[truncated]")
    chars = _truncate_chars("x" * 9000, 4000)
    assert len(chars) == 4000 and chars.endswith("...[truncated]")
    assert _truncate_chars("short", 4000) == "short"


def test_error_codes_and_delays_are_made_acceptable() -> None:
    assert _error_code("malformed_document") == "malformed_document"
    assert _error_code("bad code!") == "bad_code_"
    assert _error_code("x" * 150) == "x" * 100 and _error_code("") == "error"
    assert (_retry_after(None), _retry_after(1.5), _retry_after(-3)) == (None, 2, 0)
    assert _retry_after(10**9) == 86_400


# -- local behaviour of the Client ----------------------------------------------------------------


def test_nothing_listening_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", "t", timeout=2) as client,
        pytest.raises(TransportError),
    ):
        client.runner_config()


def test_enqueue_checks_its_options_before_sending_anything() -> None:
    with Client("http://127.0.0.1:9", "t") as client:
        with pytest.raises(TypeError):
            client.enqueue("demo.echo", "p", {}, tenant="other")
        with pytest.raises(TypeError):
            client.enqueue("demo.echo", "p", {}, not_before=datetime(2030, 1, 1))  # noqa: DTZ001


def test_token_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    source = token_from_file(token_file)
    assert source() == "first"
    token_file.write_text("second\n")
    os.utime(token_file, ns=(1, 10**18))  # make sure the mtime changes
    assert source() == "second"
    token_file.write_text("")
    os.utime(token_file, ns=(1, 2 * 10**18))
    with pytest.raises(ValueError):
        source()
