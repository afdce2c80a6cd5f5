"""StellaOps Orchestrator: the Django project package and the lease/scheduling core.

Importing the package loads the Celery app so ``@shared_task`` binds to it (Celery's
documented Django layout).
"""
from .celery import app as celery_app

__all__ = ["celery_app"]
