"""gunicorn settings for the bridge: ``gunicorn -c python:orchestrator.gunicorn_conf
orchestrator.wsgi``. gthread workers, because a long-poll claim occupies a thread for up to
ORCH_CLAIM_MAX_WAIT_SECONDS; on shutdown every waiting claim is ended at once."""
import os

bind = os.environ.get("ORCH_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("ORCH_WEB_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("ORCH_WEB_THREADS", "8"))
graceful_timeout = 10


def worker_int(worker):  # type: ignore[no-untyped-def]
    from orchestrator import wakeups

    wakeups.close()


def worker_abort(worker):  # type: ignore[no-untyped-def]
    from orchestrator import wakeups

    wakeups.close()
