"""The HTTP floor for the benchmark: a trivial Django view doing ``SELECT 1``, served exactly
like the bridge. Routed only when ORCH_BENCH_ENDPOINTS=true."""
from django.db import connection
from django.http import HttpRequest, JsonResponse


def floor(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        value = cursor.fetchone()[0]
    return JsonResponse({"ok": value})
