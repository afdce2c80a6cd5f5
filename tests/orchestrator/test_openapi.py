"""Every public endpoint is in the OpenAPI schema, and the schema validates without warnings."""
from __future__ import annotations

import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver


def _api_routes(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _api_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def test_schema_validates_and_lists_every_api_route(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    documented = {p.replace("{", "<").replace("}", ">") for p in schema["paths"]}
    routes = {"/" + r for r in _api_routes(get_resolver().url_patterns) if r.startswith("api/v1/")}
    normalized = {r.replace("<int:", "<").replace("<uuid:", "<").replace("<path:", "<") for r in routes}
    assert normalized <= documented, normalized - documented
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
