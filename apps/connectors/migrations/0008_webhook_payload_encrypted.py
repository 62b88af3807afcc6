"""Outgoing webhook deliveries keep their body encrypted (it names customers), with the ids of the
contact and conversation it is about in clear for erasure to find; a subscription's URL must not be
a private address (apps/core/netguard.py). Existing rows get their ids, then their bodies encrypted."""

import apps.core.crypto
import apps.core.netguard
from django.db import migrations, models

TABLE = "connectors_webhookdelivery"
BATCH = 500


def _id(expression: str) -> str:
    return f"CASE WHEN {expression} ~ '^[0-9]{{1,18}}$' THEN ({expression})::bigint END"


SUBJECTS = f"""
UPDATE {TABLE} SET
    contact_id = CASE WHEN event LIKE 'contact.%' THEN {_id("payload->>'id'")}
                      ELSE COALESCE({_id("payload->>'contact_id'")}, {_id("payload->'contact'->>'id'")}) END,
    conversation_id = CASE WHEN event LIKE 'conversation.%' THEN {_id("payload->>'id'")}
                           ELSE {_id("payload->>'conversation_id'")} END
WHERE jsonb_typeof(payload) = 'object'
"""


def fill_subjects(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(SUBJECTS)


def encrypt_payloads(apps, schema_editor):
    from apps.core.crypto import encrypt

    _rewrite(schema_editor, "<>", encrypt, "to_jsonb(%s::text)")


def decrypt_payloads(apps, schema_editor):
    from apps.core.crypto import decrypt

    _rewrite(schema_editor, "=", decrypt, "%s::jsonb")


def _rewrite(schema_editor, string_test: str, convert, new_value: str) -> None:
    """Rewrites every row whose payload is (=) or is not (<>) a JSON string, in batches by id.
    `payload #>> '{}'` is a JSON string's text, or any other value's JSON."""
    last = 0
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(
                f"SELECT id, payload #>> '{{}}' FROM {TABLE} "
                f"WHERE id > %s AND jsonb_typeof(payload) {string_test} 'string' ORDER BY id LIMIT {BATCH}",
                [last],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            cursor.executemany(
                f"UPDATE {TABLE} SET payload = {new_value} WHERE id = %s", [(convert(text), pk) for pk, text in rows]
            )
            last = rows[-1][0]


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0007_messagetemplate_quality"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookdelivery",
            name="contact_id",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="conversation_id",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(fill_subjects, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="payload",
            field=apps.core.crypto.EncryptedJSONBField(),
        ),
        migrations.AlterField(
            model_name="webhooksubscription",
            name="url",
            field=models.URLField(
                max_length=500, validators=[apps.core.netguard.validate_outbound_url], verbose_name="URL"
            ),
        ),
        migrations.RunPython(encrypt_payloads, decrypt_payloads, elidable=True),
    ]
