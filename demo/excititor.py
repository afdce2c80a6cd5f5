"""Excititor demo worker: ingest one VEX document (OpenVEX or CSAF 2.0 VEX) per job.

Job type ``excititor.vex.ingest``; payload::

    {"format": "openvex" | "csaf", "path": "<repo-relative file>",
     "simulate_transient_failures": k?}

Each (vulnerability, product) pair becomes one NDJSON line ``{"vulnerability", "product",
"status", "justification", "document_id", "source_format"}`` in
``<ORCH_ARTIFACT_DIR or var/artifacts>/<job_id>/vex-statements.ndjson``. ``status`` uses the
OpenVEX vocabulary (``not_affected``, ``affected``, ``fixed``, ``under_investigation``);
CSAF product statuses are mapped onto it. Malformed statements are counted and logged; a
document that cannot be parsed fails the job with ``NonRetryableError("malformed_document")``.

Run: ``python -m demo.excititor --base-url http://localhost:8000 --token-file token.txt``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellaops_worker import JobContext, NonRetryableError

from ._common import (
    NDJSON,
    MalformedRecord,
    artifact_dir,
    load_json_document,
    maybe_fail_transiently,
    report_malformed,
    resolve_data_path,
    run_workers_cli,
    write_ndjson,
)

JOB_TYPE = "excititor.vex.ingest"
FORMATS = ("openvex", "csaf")
STATUSES = frozenset({"not_affected", "affected", "fixed", "under_investigation"})
# CSAF 2.0 product_status groups -> OpenVEX status. "recommended" is advice, not a status.
CSAF_STATUS = {
    "known_not_affected": "not_affected",
    "known_affected": "affected",
    "first_affected": "affected",
    "last_affected": "affected",
    "fixed": "fixed",
    "first_fixed": "fixed",
    "under_investigation": "under_investigation",
}
PROGRESS_EVERY = 50


@dataclass
class VexResult:
    """Normalized statement rows, ``(statement index, reason)`` of malformed statements,
    and how many source statements (OpenVEX) or vulnerabilities (CSAF) were read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)
    total: int = 0


def _id_of(value: Any, what: str) -> str:
    """OpenVEX identifiers: a string (v0.0.1) or an object with ``name``/``@id`` (v0.2.0)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        for key in ("name", "@id"):
            if isinstance(value.get(key), str) and value[key]:
                return str(value[key])
    raise MalformedRecord(f"{what} has no identifier")


def openvex_statement_rows(statement: Any, document_id: str | None) -> list[dict[str, Any]]:
    """Rows of one OpenVEX statement: one per product (``products[]`` as strings or
    ``{"@id"}``; subcomponents are not expanded).

    Raises:
        MalformedRecord: no vulnerability id, unknown status or no products.
    """
    if not isinstance(statement, dict):
        raise MalformedRecord("statement is not an object")
    vulnerability = _id_of(statement.get("vulnerability"), "vulnerability")
    status = statement.get("status")
    if status not in STATUSES:
        raise MalformedRecord(f"{vulnerability}: unknown status {status!r}")
    products = statement.get("products")
    if not isinstance(products, list) or not products:
        raise MalformedRecord(f"{vulnerability}: no products")
    justification = statement.get("justification")
    rows = []
    seen: set[str] = set()
    for product in products:
        product_id = _id_of(product, f"{vulnerability}: product")
        if product_id in seen:
            continue
        seen.add(product_id)
        rows.append(
            {
                "vulnerability": vulnerability,
                "product": product_id,
                "status": status,
                "justification": justification if isinstance(justification, str) else None,
                "document_id": document_id,
                "source_format": "openvex",
            }
        )
    return rows


def normalize_openvex(
    doc: Any, *, on_progress: Callable[[int, int], None] | None = None
) -> VexResult:
    """Normalize an OpenVEX document (v0.2.0 and legacy v0.0.1).

    Raises:
        NonRetryableError: ``malformed_document`` without an OpenVEX ``@context`` or a
            ``statements`` list.
    """
    if not isinstance(doc, dict):
        raise NonRetryableError("malformed_document", "OpenVEX document is not a JSON object")
    context = doc.get("@context")
    if not isinstance(context, str) or not context.startswith("https://openvex.dev/ns"):
        raise NonRetryableError("malformed_document", f"not an OpenVEX @context: {context!r}")
    statements = doc.get("statements")
    if not isinstance(statements, list):
        raise NonRetryableError("malformed_document", "OpenVEX document has no statements list")
    document_id = doc.get("@id") if isinstance(doc.get("@id"), str) else None
    result = VexResult(total=len(statements))
    for index, statement in enumerate(statements):
        try:
            result.rows.extend(openvex_statement_rows(statement, document_id))
        except MalformedRecord as exc:
            result.malformed.append((index, str(exc)))
        _tick(on_progress, index + 1, result.total)
    return result


def csaf_vulnerability_rows(vulnerability: Any, document_id: str | None) -> list[dict[str, Any]]:
    """Rows of one CSAF ``vulnerabilities[]`` item: one per (status group, product id).
    ``justification`` is the CSAF flag label (e.g. ``vulnerable_code_not_present``) that
    names the product, for ``not_affected`` rows.

    Raises:
        MalformedRecord: no ``cve``/``ids``, or ``product_status`` missing or ill-typed.
    """
    if not isinstance(vulnerability, dict):
        raise MalformedRecord("vulnerability is not an object")
    vuln_id = vulnerability.get("cve")
    if not isinstance(vuln_id, str) or not vuln_id:
        ids = vulnerability.get("ids")
        first = ids[0] if isinstance(ids, list) and ids and isinstance(ids[0], dict) else {}
        vuln_id = first.get("text")
    if not isinstance(vuln_id, str) or not vuln_id:
        raise MalformedRecord("vulnerability has neither 'cve' nor 'ids'")
    status_groups = vulnerability.get("product_status")
    if not isinstance(status_groups, dict) or not status_groups:
        raise MalformedRecord(f"{vuln_id}: no product_status")
    flag_of: dict[str, str] = {}
    for flag in vulnerability.get("flags") or []:
        if isinstance(flag, dict) and isinstance(flag.get("label"), str):
            for product_id in flag.get("product_ids") or []:
                flag_of.setdefault(str(product_id), flag["label"])
    rows = []
    for group, product_ids in status_groups.items():
        status = CSAF_STATUS.get(group)
        if status is None:
            continue
        if not isinstance(product_ids, list) or not all(isinstance(p, str) for p in product_ids):
            raise MalformedRecord(f"{vuln_id}: product_status.{group} is not a list of ids")
        for product_id in product_ids:
            rows.append(
                {
                    "vulnerability": vuln_id,
                    "product": product_id,
                    "status": status,
                    "justification": flag_of.get(product_id) if status == "not_affected" else None,
                    "document_id": document_id,
                    "source_format": "csaf",
                }
            )
    return rows


def normalize_csaf(doc: Any, *, on_progress: Callable[[int, int], None] | None = None) -> VexResult:
    """Normalize a CSAF 2.0 document (VEX profile or an advisory with product statuses).

    Raises:
        NonRetryableError: ``malformed_document`` without ``document.csaf_version`` 2.0 or a
            ``vulnerabilities`` list.
    """
    document = doc.get("document") if isinstance(doc, dict) else None
    if not isinstance(document, dict) or document.get("csaf_version") != "2.0":
        raise NonRetryableError("malformed_document", "not a CSAF 2.0 document")
    vulnerabilities = doc.get("vulnerabilities")
    if not isinstance(vulnerabilities, list):
        raise NonRetryableError("malformed_document", "CSAF document has no vulnerabilities list")
    tracking = document.get("tracking")
    document_id = tracking.get("id") if isinstance(tracking, dict) else None
    result = VexResult(total=len(vulnerabilities))
    for index, vulnerability in enumerate(vulnerabilities):
        try:
            result.rows.extend(csaf_vulnerability_rows(vulnerability, document_id))
        except MalformedRecord as exc:
            result.malformed.append((index, str(exc)))
        _tick(on_progress, index + 1, result.total)
    return result


def _tick(on_progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if on_progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
        on_progress(done, total)


def ingest_document(
    path: Path, fmt: str, *, on_progress: Callable[[int, int], None] | None = None
) -> VexResult:
    """Parse ``path`` and normalize it as ``fmt`` (``openvex`` or ``csaf``).

    Raises:
        NonRetryableError: ``malformed_document`` (unparseable or wrong shape) or
            ``invalid_payload`` (unknown format).
    """
    if fmt not in FORMATS:
        raise NonRetryableError("invalid_payload", f"format must be one of {FORMATS}, got {fmt!r}")
    doc = load_json_document(path)
    if fmt == "openvex":
        return normalize_openvex(doc, on_progress=on_progress)
    return normalize_csaf(doc, on_progress=on_progress)


def handle(ctx: JobContext) -> dict[str, Any]:
    """``excititor.vex.ingest`` handler: returns ``{"records", "malformed"}`` (statement rows
    and malformed statements) and attaches ``vex-statements.ndjson``."""
    maybe_fail_transiently(ctx)
    payload = ctx.payload
    fmt = payload.get("format")
    if fmt not in FORMATS:
        raise NonRetryableError("invalid_payload", f"format must be one of {FORMATS}, got {fmt!r}")
    path = resolve_data_path(payload.get("path"))
    ctx.log("info", f"ingesting {payload['path']} ({fmt})")

    def progress(done: int, total: int) -> None:
        ctx.progress(done, total, f"{fmt} statements")
        ctx.check()

    result = ingest_document(path, str(fmt), on_progress=progress)
    report_malformed(ctx, result.malformed)
    out = artifact_dir(ctx.job_id) / "vex-statements.ndjson"
    write_ndjson(out, result.rows)
    artifact = ctx.write_artifact(out.name, out, NDJSON)
    ctx.log(
        "info",
        f"wrote {len(result.rows)} statements ({len(result.malformed)} malformed) to {out} "
        f"sha256={artifact['sha256']} size={artifact['size_bytes']}",
    )
    return {"records": len(result.rows), "malformed": len(result.malformed)}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m demo.excititor --base-url URL --token-file F [--concurrency N]``."""
    return run_workers_cli([(JOB_TYPE, handle)], argv, "Excititor VEX ingest worker (demo)")


if __name__ == "__main__":
    raise SystemExit(main())
