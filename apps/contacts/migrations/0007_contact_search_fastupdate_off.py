# The contact search index without GIN's pending list: every search read the whole list (up to
# gin_pending_list_limit, 4 MB: ~410 pages, ~4 ms) before the index itself, and vacuum only
# empties it now and then. Altered in place (no rebuild), then the list is merged.
from django.contrib.postgres.indexes import GinIndex
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0006_identity_reachability_at"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    [
                        "ALTER INDEX contact_search SET (fastupdate = off)",
                        "SELECT gin_clean_pending_list('contact_search')",
                    ],
                    reverse_sql="ALTER INDEX contact_search RESET (fastupdate)",
                ),
            ],
            state_operations=[
                migrations.RemoveIndex(model_name="contact", name="contact_search"),
                migrations.AddIndex(
                    model_name="contact",
                    index=GinIndex(fastupdate=False, fields=["search_tokens"], name="contact_search"),
                ),
            ],
        ),
    ]
