import gc
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _keep_database_connections(**kwargs):
    """A worker process runs one task at a time on its own thread: it keeps its PostgreSQL
    connection between tasks instead of opening one per task, which cost more than the task
    itself (an operator's reply: a third of its delivery's CPU, and a PostgreSQL backend started
    for it). The web processes keep DATABASE_CONN_MAX_AGE (0 under ASGI)."""
    from django.conf import settings
    from django.db import connections

    age = settings.WORKER_DATABASE_CONN_MAX_AGE
    for connection in connections.all():
        connection.settings_dict["CONN_MAX_AGE"] = age


@task_prerun.connect
@task_postrun.connect
def _check_database_connections(sender=None, **kwargs):
    """Around each task what Django does around each request: a connection that broke (PostgreSQL
    restarted), was left outside autocommit or is past its age is closed, and the next query
    connects afresh; a kept one is checked before its first query (CONN_HEALTH_CHECKS). Celery's
    own Django fix-up closes every connection around every task instead, unless
    CELERY_DB_REUSE_MAX is set (config/settings.py sets it out of reach: this does the job)."""
    from django.db import connections

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # run in the caller's process (and perhaps its transaction): the caller's connection
    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()


@worker_process_init.connect
def _freeze_what_is_loaded(**kwargs):
    """Django and every module the tasks need are loaded by now and live as long as the process:
    out of the garbage collector's sight, its full collections walk only what tasks made (as in
    the web process, config/asgi.py), which keeps a drainer's pauses short."""
    gc.collect()
    gc.freeze()
