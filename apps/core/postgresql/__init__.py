"""PostgreSQL as Parley uses it: the backend (`base`, named in config/env.py) and what statements
need of it."""

from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def planned_for_values():
    """Inside, PostgreSQL plans each statement for its parameters' values rather than using the
    plan it keeps for a prepared statement (config/settings.py), made without them. For the few
    statements such a plan serves badly: a broadcast batch's lookups by `channel = $1 AND contact
    IN (80 ids)` took 27 ms with the kept plan and 2 ms planned for the ids."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_custom_plan")  # until the transaction ends
        yield
