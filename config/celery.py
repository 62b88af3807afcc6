import gc
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _keep_database_connections(**kwargs):
    """A worker process runs one task at a time on its own thread: it keeps its PostgreSQL
    connection between tasks (health-checked) instead of opening one per task, which cost more
    than the task itself. The web processes keep DATABASE_CONN_MAX_AGE (0 under ASGI)."""
    from django.conf import settings
    from django.db import connections

    age = settings.WORKER_DATABASE_CONN_MAX_AGE
    for connection in connections.all():
        connection.settings_dict["CONN_MAX_AGE"] = age


@worker_process_init.connect
def _freeze_what_is_loaded(**kwargs):
    """Django and every module the tasks need are loaded by now and live as long as the process:
    out of the garbage collector's sight, its full collections walk only what tasks made (as in
    the web process, config/asgi.py), which keeps a drainer's pauses short."""
    gc.collect()
    gc.freeze()
