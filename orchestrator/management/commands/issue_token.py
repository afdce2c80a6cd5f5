"""``manage.py issue_token --tenant T --scopes orch:runner,orch:read [--ttl-seconds N]
[--runner-tenants A,B,C]``

Prints a bearer token signed by the local signer (standalone mode and tests).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestrator.tokens import SCOPES, token_issue


class Command(BaseCommand):
    help = "Print a bearer token (JWT) for a tenant and scopes, signed with ORCH_JWT_SECRET."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--scopes", required=True,
                            help=f"comma-separated, from: {', '.join(SCOPES)}")
        parser.add_argument("--subject", default="cli", help="the token's sub (who acts)")
        parser.add_argument("--ttl-seconds", type=int, default=12 * 3600)
        parser.add_argument("--runner-tenants", default=None,
                            help="comma-separated tenants a shared runner pool serves")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            token = token_issue(tenant=options["tenant"], scopes=scopes,
                                subject=options["subject"],
                                ttl=timedelta(seconds=options["ttl_seconds"]),
                                runner_tenants=(None if options["runner_tenants"] is None else
                                                [t.strip() for t in
                                                 options["runner_tenants"].split(",")
                                                 if t.strip()]))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(token)
