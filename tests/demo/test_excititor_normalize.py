"""Excititor demo normalizers against the real VEX files in demo/data (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stellaops_worker import NonRetryableError

from demo import excititor, plan
from demo._common import REPO_ROOT

pytestmark: list[pytest.MarkDecorator] = []

DATA = REPO_ROOT / "demo" / "data"
OPENVEX = DATA / "vex" / "openvex"
CSAF = DATA / "vex" / "csaf"
TRUNCATED = (
    DATA / "edge-cases" / "vex" / ("aquasecurity-trivy-oci-image.openvex.TRUNCATED-1800-bytes.json")
)
FIELDS = {"vulnerability", "product", "status", "justification", "document_id", "source_format"}


@pytest.mark.parametrize(
    ("name", "statements", "rows"),
    [
        ("aquasecurity-trivy.openvex.json", 21, 21),
        ("aquasecurity-trivy-oci-image.openvex.json", 7, 21),  # 3 image products each
        ("inspektor-gadget-golang.openvex.json", 2, 6),
        ("rancher-k3s-io-kine.openvex.json", 10, 10),
    ],
)
def test_openvex_documents_give_one_row_per_statement_product(
    name: str, statements: int, rows: int
) -> None:
    result = excititor.ingest_document(OPENVEX / name, "openvex")
    assert (result.total, len(result.rows), result.malformed) == (statements, rows, [])
    assert all(set(r) == FIELDS and r["status"] == "not_affected" for r in result.rows)


def test_openvex_row_shape() -> None:
    rows = excititor.ingest_document(
        OPENVEX / "inspektor-gadget-golang.openvex.json", "openvex"
    ).rows
    assert rows[0] == {
        "vulnerability": "CVE-2025-54388",
        "product": "pkg:golang/github.com/inspektor-gadget/inspektor-gadget@v0.41.0",
        "status": "not_affected",
        "justification": "vulnerable_code_not_in_execute_path",
        "document_id": "https://github.com/inspektor-gadget/inspektor-gadget/blob/main/.vex/golang.vex.json",
        "source_format": "openvex",
    }


def test_legacy_openvex_with_string_ids_is_accepted() -> None:
    path = DATA / "edge-cases" / "vex" / "go-vex-openvex-v0.0.1-legacy.json"
    result = excititor.ingest_document(path, "openvex")
    assert [(r["vulnerability"], r["status"]) for r in result.rows] == [
        ("CVE-2023-12345", "fixed")
    ] * 2


def test_truncated_document_raises_malformed_document() -> None:
    with pytest.raises(NonRetryableError) as info:
        excititor.ingest_document(TRUNCATED, "openvex")
    assert info.value.code == "malformed_document"


def test_csaf_document_passed_as_openvex_is_a_malformed_document() -> None:
    with pytest.raises(NonRetryableError):
        excititor.ingest_document(CSAF / "redhat-CVE-2024-34500.json", "openvex")


@pytest.mark.parametrize(
    ("name", "rows", "statuses"),
    [
        ("redhat-CVE-2024-34500.json", 1, {"affected": 1}),
        ("redhat-CVE-2023-20862.json", 22, {"affected": 13, "not_affected": 9}),
        ("redhat-rhsa-2023_5835.json", 12, {"fixed": 12}),
    ],
)
def test_csaf_product_statuses_map_to_vex_statuses(
    name: str, rows: int, statuses: dict[str, int]
) -> None:
    result = excititor.ingest_document(CSAF / name, "csaf")
    assert len(result.rows) == rows and result.malformed == []
    counted: dict[str, int] = {}
    for row in result.rows:
        counted[row["status"]] = counted.get(row["status"], 0) + 1
    assert counted == statuses


def test_csaf_not_affected_rows_carry_the_flag_as_justification() -> None:
    rows = excititor.ingest_document(CSAF / "redhat-CVE-2023-20862.json", "csaf").rows
    not_affected = [r for r in rows if r["status"] == "not_affected"]
    assert {r["justification"] for r in not_affected} == {"vulnerable_code_not_present"}
    assert {r["document_id"] for r in rows} == {"CVE-2023-20862"}


def test_malformed_statement_is_counted_not_fatal(tmp_path: Path) -> None:
    doc = json.loads((OPENVEX / "rancher-k3s-io-kine.openvex.json").read_text())
    del doc["statements"][3]["status"]
    doc["statements"][5]["products"] = []
    path = tmp_path / "kine-damaged.openvex.json"
    path.write_text(json.dumps(doc))
    result = excititor.ingest_document(path, "openvex")
    assert len(result.rows) == 8
    assert [i for i, _ in result.malformed] == [3, 5]


def test_demo_plan_covers_every_data_file_and_both_failure_paths() -> None:
    jobs = plan.demo_jobs()
    paths = {job["payload"]["path"] for job in jobs}
    data_files = {
        str(p.relative_to(REPO_ROOT))
        for p in DATA.rglob("*")
        if p.is_file() and p.suffix in (".json", ".gz", ".jsonl")
    }
    assert paths == data_files
    assert all((REPO_ROOT / p).is_file() for p in paths)
    keys = [job["idempotency_key"] for job in jobs]
    assert len(keys) == len(set(keys))
    assert sum(1 for j in jobs if j["payload"].get("simulate_transient_failures") == 1) == 1
    assert str(TRUNCATED.relative_to(REPO_ROOT)) in paths
    assert all(
        set(j) == {"job_type", "project", "source", "payload", "idempotency_key"} for j in jobs
    )
