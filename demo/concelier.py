"""Concelier demo worker: ingest advisories (OSV, CVE JSON 5, NVD API 2.0) shard by shard.

Job type ``concelier.advisory.ingest``; payload::

    {"format": "osv" | "cve5" | "nvd", "path": "<repo-relative file>",
     "shard": i, "shards": n, "simulate_transient_failures": k?}

The shard holds the records whose index % shards == shard. Each record becomes one NDJSON
line ``{"advisory_id", "aliases", "source_format", "published", "modified", "summary",
"affected": [{"ecosystem", "package"}], "references_count"}`` in
``<ORCH_ARTIFACT_DIR or var/artifacts>/<job_id>/advisories-<shard>.ndjson``. Malformed
records are counted and logged; a document that cannot be read at all fails the job with
``NonRetryableError("malformed_document")`` (it is dead-lettered, not retried).

Run: ``python -m demo.concelier --base-url http://localhost:8000 --token-file token.txt``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stellaops_worker import JobContext, NonRetryableError

from ._common import (
    NDJSON,
    MalformedRecord,
    artifact_dir,
    load_json_document,
    maybe_fail_transiently,
    normalize_timestamp,
    read_text,
    report_malformed,
    resolve_data_path,
    run_workers_cli,
    write_ndjson,
)

JOB_TYPE = "concelier.advisory.ingest"
FORMATS = ("osv", "cve5", "nvd")
PROGRESS_EVERY = 100


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that is not JSON; normalizing it raises ``MalformedRecord``."""

    reason: str


@dataclass
class ShardResult:
    """Outcome of one shard: normalized rows, ``(record index, reason)`` of malformed
    records, and the number of records in the shard."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)
    total: int = 0


# -- reading ----------------------------------------------------------------------------------


def load_records(path: Path, fmt: str) -> list[Any]:
    """All raw records of a document, in file order.

    * ``osv`` / ``cve5``: JSON Lines (``.jsonl``, ``.jsonl.gz``): one record per non-blank
      line; a line that is not JSON becomes a ``BadLine`` (a malformed *record*). A ``.json``
      (or ``.json.gz``) file holds a single record.
    * ``nvd``: one NVD CVE API 2.0 response; the records are ``vulnerabilities[]`` (the
      header's ``totalResults`` is not trusted: a real page says 1 and holds 13).

    Raises:
        NonRetryableError: ``malformed_document`` (unreadable, not JSON, wrong shape),
            ``unsupported_format`` (e.g. a legacy NVD 1.1 feed), ``invalid_payload``.
    """
    if fmt not in FORMATS:
        raise NonRetryableError("invalid_payload", f"unknown format {fmt!r}")
    if fmt == "nvd":
        doc = load_json_document(path)
        if isinstance(doc, dict) and "CVE_Items" in doc:
            raise NonRetryableError("unsupported_format", "legacy NVD 1.1 feed; need API 2.0")
        if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
            raise NonRetryableError(
                "malformed_document", f"{path.name}: not an NVD API 2.0 response"
            )
        if doc.get("format") not in (None, "NVD_CVE"):
            raise NonRetryableError("malformed_document", f"{path.name}: format {doc['format']!r}")
        return list(doc["vulnerabilities"])
    name = path.name
    if name.endswith((".json", ".json.gz")):
        return [load_json_document(path)]
    records: list[Any] = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            records.append(BadLine(f"line {number} is not JSON ({exc.msg} at column {exc.colno})"))
    return records


def select_shard(count: int, shard: int, shards: int) -> range:
    """Indexes of the records in ``shard`` of ``shards`` (``index % shards == shard``).

    Raises:
        NonRetryableError: ``invalid_payload`` unless ``0 <= shard < shards``.
    """
    if not isinstance(shards, int) or not isinstance(shard, int) or isinstance(shard, bool):
        raise NonRetryableError("invalid_payload", "shard and shards must be integers")
    if shards < 1 or not 0 <= shard < shards:
        raise NonRetryableError(
            "invalid_payload", f"need 0 <= shard < shards, got {shard}/{shards}"
        )
    return range(shard, count, shards)


# -- normalizers ------------------------------------------------------------------------------

_CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,}$")
_ALIAS_IN_URL = re.compile(r"\b(GO-\d{4}-\d{4,}|GHSA(?:-[23456789cfghjmpqrvwx]{4}){3})\b")
_COLLECTIONS = {
    "pkg.go.dev": "Go",
    "pypi.org": "PyPI",
    "www.npmjs.com": "npm",
    "npmjs.com": "npm",
    "crates.io": "crates.io",
    "repo.maven.apache.org": "Maven",
    "rubygems.org": "RubyGems",
    "packagist.org": "Packagist",
    "www.nuget.org": "NuGet",
}


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedRecord(f"{what} is not a list of strings")
    return list(value)


def _dedupe(items: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in items:
        key = (item["ecosystem"], item["package"])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _english(descriptions: Any) -> str | None:
    if not isinstance(descriptions, list):
        return None
    texts = [d for d in descriptions if isinstance(d, dict) and isinstance(d.get("value"), str)]
    for d in texts:
        if str(d.get("lang", "")).lower().startswith("en"):
            return str(d["value"]).strip()
    return str(texts[0]["value"]).strip() if texts else None


def _first_line(text: Any, limit: int = 200) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    line = text.strip().splitlines()[0].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def normalize_osv(record: Any) -> dict[str, Any]:
    """One OSV record -> a normalized advisory line.

    ``summary`` falls back to the first line of ``details`` (PyPA records rarely have one);
    the Go zero ``modified`` date becomes ``None``; ``affected`` entries without a
    ``package`` (GIT-only ranges) are skipped.

    Raises:
        MalformedRecord: not an object, no string ``id``, or ill-typed fields.
    """
    if isinstance(record, BadLine):
        raise MalformedRecord(record.reason)
    if not isinstance(record, dict):
        raise MalformedRecord("record is not a JSON object")
    advisory_id = record.get("id")
    if not isinstance(advisory_id, str) or not advisory_id.strip():
        raise MalformedRecord("missing 'id'")
    affected_raw = record.get("affected") or []
    if not isinstance(affected_raw, list):
        raise MalformedRecord(f"{advisory_id}: 'affected' is not a list")
    affected = []
    for entry in affected_raw:
        if not isinstance(entry, dict):
            raise MalformedRecord(f"{advisory_id}: an 'affected' entry is not an object")
        package = entry.get("package")
        if isinstance(package, dict) and package.get("name"):
            affected.append(
                {"ecosystem": str(package.get("ecosystem") or ""), "package": str(package["name"])}
            )
    references = record.get("references")
    return {
        "advisory_id": advisory_id,
        "aliases": _str_list(record.get("aliases"), f"{advisory_id}: aliases"),
        "source_format": "osv",
        "published": normalize_timestamp(record.get("published"), "published"),
        "modified": normalize_timestamp(record.get("modified"), "modified"),
        "summary": record.get("summary") or _first_line(record.get("details")),
        "affected": _dedupe(affected),
        "references_count": len(references) if isinstance(references, list) else 0,
    }


def _ecosystem_of(entry: dict[str, Any]) -> str:
    url = entry.get("collectionURL")
    if isinstance(url, str) and url:
        host = urlparse(url).netloc or url
        return _COLLECTIONS.get(host, host)
    vendor = entry.get("vendor")
    return str(vendor) if isinstance(vendor, str) and vendor.lower() != "n/a" else ""


def normalize_cve5(record: Any) -> dict[str, Any]:
    """One CVE JSON 5.x record -> a normalized advisory line.

    Accepts the partial records a CNA submits (no ``state``/``datePublished``, as in the Go
    CNA set): ``published`` is then ``None``. ``affected`` comes from the CNA container
    (``collectionURL`` mapped to an ecosystem, ``packageName`` else ``product``); ``aliases``
    are the GO-/GHSA- ids found in reference URLs. REJECTED records keep their reason as
    summary and no affected packages.

    Raises:
        MalformedRecord: no ``cveMetadata.cveId`` of the form CVE-YYYY-NNNN, or no CNA
            container.
    """
    if isinstance(record, BadLine):
        raise MalformedRecord(record.reason)
    if not isinstance(record, dict):
        raise MalformedRecord("record is not a JSON object")
    meta = record.get("cveMetadata")
    cve_id = meta.get("cveId") if isinstance(meta, dict) else None
    if not isinstance(cve_id, str) or not _CVE_ID.match(cve_id):
        raise MalformedRecord("missing or invalid cveMetadata.cveId")
    assert isinstance(meta, dict)
    containers = record.get("containers")
    cna = containers.get("cna") if isinstance(containers, dict) else None
    if not isinstance(cna, dict):
        raise MalformedRecord(f"{cve_id}: no CNA container")
    refs_raw = cna.get("references")
    references: list[Any] = refs_raw if isinstance(refs_raw, list) else []
    aliases = sorted(
        {
            m.group(1)
            for ref in references
            if isinstance(ref, dict) and isinstance(ref.get("url"), str)
            for m in _ALIAS_IN_URL.finditer(ref["url"])
        }
    )
    affected = []
    if meta.get("state") != "REJECTED":
        entries = cna.get("affected") or []
        if not isinstance(entries, list):
            raise MalformedRecord(f"{cve_id}: 'affected' is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            package = entry.get("packageName") or entry.get("product")
            if isinstance(package, str) and package and package.lower() != "n/a":
                affected.append({"ecosystem": _ecosystem_of(entry), "package": package})
        summary = cna.get("title") or _english(cna.get("descriptions"))
    else:
        summary = _english(cna.get("rejectedReasons"))
    return {
        "advisory_id": cve_id,
        "aliases": aliases,
        "source_format": "cve5",
        "published": normalize_timestamp(meta.get("datePublished"), "datePublished"),
        "modified": normalize_timestamp(meta.get("dateUpdated"), "dateUpdated"),
        "summary": summary,
        "affected": _dedupe(affected),
        "references_count": len(references),
    }


def _cpe_packages(configurations: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    stack = list(configurations) if isinstance(configurations, list) else []
    while stack:
        node = stack.pop(0)
        if not isinstance(node, dict):
            continue
        stack.extend(n for n in node.get("nodes") or [] if isinstance(n, dict))
        for match in node.get("cpeMatch") or []:
            if not isinstance(match, dict) or not match.get("vulnerable"):
                continue
            parts = str(match.get("criteria", "")).split(":")
            if len(parts) >= 5 and parts[0] == "cpe" and parts[1] == "2.3":
                out.append({"ecosystem": "cpe", "package": f"{parts[3]}:{parts[4]}"})
    return out


def normalize_nvd(record: Any) -> dict[str, Any]:
    """One ``vulnerabilities[]`` item of an NVD API 2.0 response -> a normalized line.

    NVD times carry no zone and are UTC; ``affected`` lists ``vendor:product`` of the
    vulnerable CPE matches (ecosystem ``cpe``); NVD has no aliases.

    Raises:
        MalformedRecord: no ``cve`` object or no CVE id.
    """
    cve = record.get("cve") if isinstance(record, dict) else None
    if not isinstance(cve, dict):
        raise MalformedRecord("item has no 'cve' object")
    cve_id = cve.get("id")
    if not isinstance(cve_id, str) or not _CVE_ID.match(cve_id):
        raise MalformedRecord("missing or invalid cve.id")
    references = cve.get("references")
    return {
        "advisory_id": cve_id,
        "aliases": [],
        "source_format": "nvd",
        "published": normalize_timestamp(cve.get("published"), "published"),
        "modified": normalize_timestamp(cve.get("lastModified"), "lastModified"),
        "summary": _english(cve.get("descriptions")),
        "affected": _dedupe(_cpe_packages(cve.get("configurations"))),
        "references_count": len(references) if isinstance(references, list) else 0,
    }


NORMALIZERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "osv": normalize_osv,
    "cve5": normalize_cve5,
    "nvd": normalize_nvd,
}


def ingest_shard(
    path: Path,
    fmt: str,
    shard: int = 0,
    shards: int = 1,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> ShardResult:
    """Read ``path``, normalize the records of one shard, count the malformed ones.

    Args:
        path: the document (see ``load_records``).
        fmt: ``osv``, ``cve5`` or ``nvd``.
        shard, shards: which records (``index % shards == shard``).
        on_progress: called as ``(done, total)`` every 100 records and at the end; it may
            raise to stop (the worker calls ``ctx.check()`` there).

    Raises:
        NonRetryableError: see ``load_records`` and ``select_shard``.
    """
    records = load_records(path, fmt)
    indexes = select_shard(len(records), shard, shards)
    normalize = NORMALIZERS[fmt]
    result = ShardResult(total=len(indexes))
    for done, index in enumerate(indexes, start=1):
        try:
            result.rows.append(normalize(records[index]))
        except MalformedRecord as exc:
            result.malformed.append((index, str(exc)))
        if on_progress is not None and (done % PROGRESS_EVERY == 0 or done == result.total):
            on_progress(done, result.total)
    return result


# -- worker -----------------------------------------------------------------------------------


def handle(ctx: JobContext) -> dict[str, Any]:
    """``concelier.advisory.ingest`` handler: returns ``{"records", "malformed"}`` and
    attaches ``advisories-<shard>.ndjson`` as an artifact."""
    maybe_fail_transiently(ctx)
    payload = ctx.payload
    fmt = payload.get("format")
    if fmt not in FORMATS:
        raise NonRetryableError("invalid_payload", f"format must be one of {FORMATS}, got {fmt!r}")
    shard, shards = payload.get("shard", 0), payload.get("shards", 1)
    path = resolve_data_path(payload.get("path"))
    ctx.log("info", f"ingesting {payload['path']} ({fmt}) shard {shard}/{shards}")

    def progress(done: int, total: int) -> None:
        ctx.progress(done, total, f"{fmt} shard {shard}/{shards}")
        ctx.check()

    result = ingest_shard(path, str(fmt), shard, shards, on_progress=progress)
    report_malformed(ctx, result.malformed)
    out = artifact_dir(ctx.job_id) / f"advisories-{shard}.ndjson"
    write_ndjson(out, result.rows)
    artifact = ctx.write_artifact(out.name, out, NDJSON)
    ctx.log(
        "info",
        f"wrote {len(result.rows)} advisories ({len(result.malformed)} malformed) to {out} "
        f"sha256={artifact['sha256']} size={artifact['size_bytes']}",
    )
    return {"records": len(result.rows), "malformed": len(result.malformed)}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m demo.concelier --base-url URL --token-file F [--concurrency N]``."""
    return run_workers_cli([(JOB_TYPE, handle)], argv, "Concelier advisory ingest worker (demo)")


if __name__ == "__main__":
    raise SystemExit(main())
