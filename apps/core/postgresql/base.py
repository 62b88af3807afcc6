"""Django's PostgreSQL backend, knowing the limit server-side binding puts on parameters.

Parley binds parameters on the server (config/settings.py), and PostgreSQL's protocol carries at
most 65,535 of them in one statement. Django 5.2 does not know that (it learned it later, ticket
#36822) and sends a bulk_create of any size as one INSERT: 5,000 contacts of a dozen columns were
refused. Here a bulk_create is cut into batches that fit, and `in_bulk` looks up that many ids at
most per query, as Django does for the backends with such a limit."""

from django.db.backends.postgresql import base, features, operations
from django.utils.functional import cached_property

MAX_PARAMETERS = 2**16 - 1


class DatabaseFeatures(features.DatabaseFeatures):
    @cached_property
    def max_query_params(self):
        bound_on_server = self.connection.settings_dict["OPTIONS"].get("server_side_binding") is True
        return MAX_PARAMETERS if bound_on_server else None


class DatabaseOperations(operations.DatabaseOperations):
    def bulk_batch_size(self, fields, objs):
        limit = self.connection.features.max_query_params
        if limit is None or not fields:
            return len(objs)
        return max(1, limit // len(fields))


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
    ops_class = DatabaseOperations
