"""``GET /healthz``: liveness and database reachability, for load balancers and scripts."""
from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok"}`` when the database answers, else 503 with the error code."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "error", "error": {"code": "database_unavailable"}},
                            status=503)
    return JsonResponse({"status": "ok"})
