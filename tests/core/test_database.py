"""The database backend (apps/core/postgresql): parameters bound on the server, at most 65,535 of
them in one statement, so a big bulk_create is cut into batches that fit."""

import pytest
from django.db import connection

from apps.contacts.models import Contact, Tag
from apps.core.postgresql import planned_for_values
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db


def test_parameters_are_bound_on_the_server_and_statements_prepared():
    assert connection.settings_dict["OPTIONS"]["server_side_binding"] is True
    assert connection.features.max_query_params == 65_535
    with connection.cursor() as cursor:
        for _ in range(6):  # psycopg prepares a statement on its fifth run
            cursor.execute("SELECT count(*) FROM contacts_contact WHERE workspace_id = %s", [0])
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] >= 1


def test_a_bulk_create_past_the_parameter_limit_is_sent_in_batches_that_fit():
    workspace = make_workspace(name="Nile Basket", slug="nile")
    fields = len([f for f in Contact._meta.concrete_fields if not f.primary_key])
    count = 65_535 // fields + 500  # one INSERT of these would carry more than 65,535 parameters

    Contact.objects.bulk_create([Contact(workspace=workspace, name=f"Customer {n}") for n in range(count)])
    Tag.objects.bulk_create([Tag(workspace=workspace, name=f"tag {n}") for n in range(20_000)])

    assert Contact.objects.filter(workspace=workspace).count() == count
    assert Tag.objects.filter(workspace=workspace).count() == 20_000


@pytest.mark.django_db(transaction=True)  # SET LOCAL lasts until the transaction ends: the test's own would hide that
def test_statements_in_planned_for_values_are_planned_for_their_values_and_only_there():
    def plan_cache_mode() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW plan_cache_mode")
            return cursor.fetchone()[0]

    with planned_for_values():
        inside = plan_cache_mode()

    assert (inside, plan_cache_mode()) == ("force_custom_plan", "auto")
