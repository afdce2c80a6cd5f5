"""Concelier demo normalizers against the real files in demo/data (no server, no database)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from stellaops_worker import JobContext, NonRetryableError

from demo import concelier
from demo._common import REPO_ROOT, MalformedRecord, normalize_timestamp

pytestmark: list[pytest.MarkDecorator] = []

DATA = REPO_ROOT / "demo" / "data"
RUSTSEC = DATA / "osv" / "rustsec.osv.jsonl.gz"
GO_CNA = DATA / "cve5" / "go-cna-submissions.cve5.jsonl.gz"
GO_CNA_TORN = DATA / "cve5" / "go-cna-submissions.first-40.line-21-truncated.cve5.jsonl"
NVD_PAGE = DATA / "nvd" / "api2.0-page-13-records-header-says-1.json"
NVD_XZ = DATA / "nvd" / "api2.0" / "CVE-2024-3094.json"
FIELDS = {
    "advisory_id",
    "aliases",
    "source_format",
    "published",
    "modified",
    "summary",
    "affected",
    "references_count",
}


def test_rustsec_bundle_normalizes_all_1206_records() -> None:
    result = concelier.ingest_shard(RUSTSEC, "osv")
    assert (result.total, len(result.rows), result.malformed) == (1206, 1206, [])
    first = result.rows[0]
    assert set(first) == FIELDS
    assert first["advisory_id"] == "RUSTSEC-2016-0001"
    assert first["aliases"] == ["CVE-2016-10931", "GHSA-34p9-f4q3-c4r7"]
    assert first["affected"] == [{"ecosystem": "crates.io", "package": "openssl"}]
    assert first["published"] == "2016-11-05T12:00:00Z"


def test_shards_partition_the_records_by_index_modulo() -> None:
    shards = [concelier.ingest_shard(RUSTSEC, "osv", i, 4) for i in range(4)]
    assert [s.total for s in shards] == [302, 302, 301, 301]
    ids = [row["advisory_id"] for s in shards for row in s.rows]
    assert len(ids) == len(set(ids)) == 1206
    assert (
        shards[1].rows[0]["advisory_id"]
        == concelier.ingest_shard(RUSTSEC, "osv").rows[1]["advisory_id"]
    )


def test_go_cna_partial_records_normalize_without_published_date() -> None:
    result = concelier.ingest_shard(GO_CNA, "cve5")
    assert (len(result.rows), result.malformed) == (239, [])
    first = result.rows[0]
    assert first["advisory_id"] == "CVE-2013-10005"
    assert first["published"] is None  # partial CNA submission: no datePublished
    assert first["aliases"] == ["GO-2020-0024"]  # found in the pkg.go.dev reference URL
    assert first["affected"][0] == {"ecosystem": "Go", "package": "github.com/btcsuite/go-socks"}


def test_truncated_line_is_counted_as_one_malformed_record() -> None:
    result = concelier.ingest_shard(GO_CNA_TORN, "cve5")
    assert result.total == 40 and len(result.rows) == 39
    [(index, reason)] = result.malformed
    assert index == 20 and "line 21 is not JSON" in reason


def test_nvd_page_body_is_trusted_over_its_header() -> None:
    header = json.loads(NVD_PAGE.read_text())
    assert header["totalResults"] == 1
    result = concelier.ingest_shard(NVD_PAGE, "nvd")
    assert (result.total, len(result.rows)) == (13, 13)
    halves = [concelier.ingest_shard(NVD_PAGE, "nvd", i, 2).total for i in range(2)]
    assert halves == [7, 6]


def test_nvd_record_gets_utc_times_and_cpe_packages() -> None:
    [row] = concelier.ingest_shard(NVD_XZ, "nvd").rows
    assert row["advisory_id"] == "CVE-2024-3094"
    assert row["published"] == "2024-03-29T17:15:21.150000Z"  # NVD omits the zone: UTC
    assert {"ecosystem": "cpe", "package": "tukaani:xz"} in row["affected"]
    assert row["summary"].startswith("Malicious code was discovered")


def test_unparseable_document_raises_non_retryable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(NVD_XZ.read_text()[:500])
    with pytest.raises(NonRetryableError) as info:
        concelier.ingest_shard(broken, "nvd")
    assert info.value.code == "malformed_document"


def test_corrupt_gzip_is_a_malformed_document(tmp_path: Path) -> None:
    torn = tmp_path / "torn.osv.jsonl.gz"
    torn.write_bytes(RUSTSEC.read_bytes()[:4000])
    with pytest.raises(NonRetryableError) as info:
        concelier.ingest_shard(torn, "osv")
    assert info.value.code == "malformed_document"


def test_record_without_id_is_malformed_but_others_survive(tmp_path: Path) -> None:
    lines = gzip.open(RUSTSEC, "rt").read().splitlines()[:3]
    record = json.loads(lines[1])
    del record["id"]
    mixed = tmp_path / "mixed.osv.jsonl"
    mixed.write_text("\n".join([lines[0], json.dumps(record), lines[2], "[1, 2]"]) + "\n")
    result = concelier.ingest_shard(mixed, "osv")
    assert len(result.rows) == 2
    assert [i for i, _ in result.malformed] == [1, 3]


@pytest.mark.parametrize(("shard", "shards"), [(4, 4), (-1, 2), (0, 0)])
def test_bad_shard_numbers_are_non_retryable(shard: int, shards: int) -> None:
    with pytest.raises(NonRetryableError):
        concelier.ingest_shard(NVD_PAGE, "nvd", shard, shards)


def test_timestamps() -> None:
    assert normalize_timestamp("0001-01-01T00:00:00Z", "m") is None  # Go vulndb zero date
    assert normalize_timestamp("2021-07-07T19:35:10", "m") == "2021-07-07T19:35:10Z"
    assert normalize_timestamp("2024-07-10T12:17:44+04:00", "m") == "2024-07-10T08:17:44Z"
    with pytest.raises(MalformedRecord):
        normalize_timestamp("yesterday", "m")


def _context(payload: dict[str, Any], attempt: int = 1) -> JobContext:
    lease: Any = {
        "lease_id": "L",
        "job_id": 4242,
        "fencing_token": 1,
        "job_type": concelier.JOB_TYPE,
        "tenant": "t",
        "project": "demo",
        "source": None,
        "payload": payload,
        "idempotency_key": None,
        "correlation_id": None,
        "attempt": attempt,
        "max_attempts": 3,
        "lease_seconds": 30,
        "lease_expires_at": "2030-01-01T00:00:00Z",
        "heartbeat_interval_seconds": 10,
        "retry_hint": {"backoff_seconds": 1, "attempts_left": 2},
    }
    return JobContext(lease, runner_id="test")


def test_handler_writes_the_artifact_and_reports_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_ARTIFACT_DIR", str(tmp_path))
    payload = {
        "format": "cve5",
        "path": str(GO_CNA_TORN.relative_to(REPO_ROOT)),
        "shard": 0,
        "shards": 1,
    }
    ctx = _context(payload)
    assert concelier.handle(ctx) == {"records": 39, "malformed": 1}
    [artifact] = ctx.artifacts
    out = tmp_path / "4242" / "advisories-0.ndjson"
    assert artifact["uri"] == out.as_uri() and artifact["size_bytes"] == out.stat().st_size
    assert len(out.read_text().splitlines()) == 39


def test_handler_simulates_transient_failures_on_early_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_ARTIFACT_DIR", str(tmp_path))
    payload = {
        "format": "nvd",
        "path": str(NVD_XZ.relative_to(REPO_ROOT)),
        "simulate_transient_failures": 1,
    }
    with pytest.raises(RuntimeError) as info:
        concelier.handle(_context(payload, attempt=1))
    assert not isinstance(info.value, NonRetryableError)
    assert concelier.handle(_context(payload, attempt=2)) == {"records": 1, "malformed": 0}


def test_handler_refuses_paths_outside_the_repository() -> None:
    with pytest.raises(NonRetryableError) as info:
        concelier.handle(_context({"format": "osv", "path": "../../etc/passwd"}))
    assert info.value.code == "invalid_payload"
