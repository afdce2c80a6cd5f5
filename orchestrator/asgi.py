"""ASGI entry point (uvicorn): standalone mode and, later, the streaming endpoints."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
application = get_asgi_application()
