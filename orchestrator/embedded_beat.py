"""An in-process beat for standalone mode: runs the tasks of ``CELERY_BEAT_SCHEDULE`` on their
intervals in one background thread, with no broker. Production runs ``celery beat`` instead;
both read the same schedule, so standalone exercises the same reaper and scheduler code.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections

from . import tasks  # noqa: F401  (registers the beat tasks on the app)
from .celery import app

log = logging.getLogger(__name__)


class EmbeddedBeat(threading.Thread):
    """Daemon thread; ``stop()`` ends it within one schedule step."""

    def __init__(self) -> None:
        super().__init__(name="embedded-beat", daemon=True)
        self._stop_event = threading.Event()
        self._entries = []
        for entry in settings.CELERY_BEAT_SCHEDULE.values():
            schedule = entry["schedule"]
            if not isinstance(schedule, timedelta):
                raise TypeError("the embedded beat supports interval schedules only")
            self._entries.append((entry["task"], schedule.total_seconds()))

    def run(self) -> None:
        due = {name: 0.0 for name, _ in self._entries}
        while not self._stop_event.is_set():
            now = time.monotonic()
            for name, every in self._entries:
                if now >= due[name]:
                    due[name] = now + every
                    try:
                        app.tasks[name].apply(throw=True)
                    except Exception:  # keep beating; the log has the traceback
                        log.exception("embedded beat: task %s failed", name)
                    finally:
                        close_old_connections()
            self._stop_event.wait(max(0.05, min(due.values()) - time.monotonic()))

    def stop(self) -> None:
        self._stop_event.set()
