"""The demo run: enqueue bodies for every file in ``demo/data``.

``demo_jobs()`` returns the ``POST /api/v1/jobs`` bodies; ``python -m demo.plan`` enqueues
them (``--dry-run`` prints them). What the run shows:

* sharding: the RustSec OSV bundle in 4 shards, the Go CNA CVE bundle in 2, the NVD page in 2;
* a malformed *record* counted, not fatal (the CVE file with a truncated line 21);
* the retry path: one NVD job with ``simulate_transient_failures: 1`` fails on attempt 1
  and succeeds on attempt 2;
* the dead-letter path: a truncated OpenVEX document -> ``malformed_document``, not retried.

Idempotency keys are stable (``demo:<run_tag>:<job_type>:<path>:<shard>/<shards>``), so
enqueuing the plan twice replays the same jobs instead of duplicating them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from stellaops_worker import Client

from . import concelier, excititor
from ._common import add_connection_args, token_source

PROJECT = "demo"
DATA = "demo/data"

# (format, repo-relative path, shards, source name)
ADVISORY_FILES: list[tuple[str, str, int, str]] = [
    ("osv", f"{DATA}/osv/rustsec.osv.jsonl.gz", 4, "osv-rustsec"),
    ("cve5", f"{DATA}/cve5/go-cna-submissions.cve5.jsonl.gz", 2, "cve5-go-cna"),
    (
        "cve5",
        f"{DATA}/cve5/go-cna-submissions.first-40.line-21-truncated.cve5.jsonl",
        1,
        "cve5-go-cna",
    ),
    ("nvd", f"{DATA}/nvd/api2.0-page-13-records-header-says-1.json", 2, "nvd-api2"),
    ("nvd", f"{DATA}/nvd/api2.0/CVE-2016-1585.json", 1, "nvd-api2"),
    ("nvd", f"{DATA}/nvd/api2.0/CVE-2021-28429.json", 1, "nvd-api2"),
    ("nvd", f"{DATA}/nvd/api2.0/CVE-2022-25929.json", 1, "nvd-api2"),
    ("nvd", f"{DATA}/nvd/api2.0/CVE-2023-4863.json", 1, "nvd-api2"),
    ("nvd", f"{DATA}/nvd/api2.0/CVE-2023-5341.json", 1, "nvd-api2"),
    ("nvd", f"{DATA}/nvd/api2.0/CVE-2024-3094.json", 1, "nvd-api2"),
]
# The advisory job that fails once on purpose (retry path).
TRANSIENT_PATH = f"{DATA}/nvd/api2.0/CVE-2024-3094.json"

# (format, repo-relative path, source name)
VEX_FILES: list[tuple[str, str, str]] = [
    ("openvex", f"{DATA}/vex/openvex/aquasecurity-trivy.openvex.json", "openvex-vendors"),
    ("openvex", f"{DATA}/vex/openvex/aquasecurity-trivy-oci-image.openvex.json", "openvex-vendors"),
    ("openvex", f"{DATA}/vex/openvex/inspektor-gadget-golang.openvex.json", "openvex-vendors"),
    ("openvex", f"{DATA}/vex/openvex/rancher-k3s-io-kine.openvex.json", "openvex-vendors"),
    ("openvex", f"{DATA}/edge-cases/vex/go-vex-openvex-v0.0.1-legacy.json", "openvex-vendors"),
    ("csaf", f"{DATA}/vex/csaf/redhat-CVE-2024-34500.json", "csaf-redhat"),
    ("csaf", f"{DATA}/vex/csaf/redhat-CVE-2023-20862.json", "csaf-redhat"),
    ("csaf", f"{DATA}/vex/csaf/redhat-rhsa-2023_5835.json", "csaf-redhat"),
    # Not parseable: dead-lettered with malformed_document.
    (
        "openvex",
        f"{DATA}/edge-cases/vex/aquasecurity-trivy-oci-image.openvex.TRUNCATED-1800-bytes.json",
        "openvex-vendors",
    ),
]

SOURCES = sorted({s for *_, s in ADVISORY_FILES} | {s for *_, s in VEX_FILES})


def demo_jobs(run_tag: str = "v1") -> list[dict[str, Any]]:
    """Enqueue bodies (``job_type, project, source, payload, idempotency_key``) for a demo
    run over all demo data: 15 advisory shard jobs and 9 VEX document jobs, including the
    malformed document and one job with ``simulate_transient_failures: 1``.

    Args:
        run_tag: part of every idempotency key; change it to enqueue a fresh run.
    """
    jobs: list[dict[str, Any]] = []
    for fmt, path, shards, source in ADVISORY_FILES:
        for shard in range(shards):
            payload: dict[str, Any] = {
                "format": fmt,
                "path": path,
                "shard": shard,
                "shards": shards,
            }
            if path == TRANSIENT_PATH:
                payload["simulate_transient_failures"] = 1
            jobs.append(
                {
                    "job_type": concelier.JOB_TYPE,
                    "project": PROJECT,
                    "source": source,
                    "payload": payload,
                    "idempotency_key": f"demo:{run_tag}:{concelier.JOB_TYPE}:{path}:{shard}/{shards}",
                }
            )
    for fmt, path, source in VEX_FILES:
        jobs.append(
            {
                "job_type": excititor.JOB_TYPE,
                "project": PROJECT,
                "source": source,
                "payload": {"format": fmt, "path": path},
                "idempotency_key": f"demo:{run_tag}:{excititor.JOB_TYPE}:{path}",
            }
        )
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m demo.plan --base-url URL --token-file F [--run-tag T] [--dry-run]``."""
    parser = argparse.ArgumentParser(description="Enqueue the demo jobs")
    add_connection_args(parser)
    parser.add_argument("--run-tag", default="v1", help="idempotency-key tag of this run")
    parser.add_argument("--dry-run", action="store_true", help="print the bodies, enqueue nothing")
    args = parser.parse_args(argv)
    jobs = demo_jobs(args.run_tag)
    if args.dry_run:
        json.dump(jobs, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    with Client(args.base_url, token_source(args, parser)) as client:
        for body in jobs:
            done = client.enqueue(
                body["job_type"],
                body["project"],
                body["payload"],
                source=body["source"],
                idempotency_key=body["idempotency_key"],
            )
            note = " (replayed)" if done.replayed else ""
            print(f"job {done.job_id}{note}: {body['job_type']} {body['payload']['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
