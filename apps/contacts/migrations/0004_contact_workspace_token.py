"""Every contact's search tokens gain its workspace's token (contacts.services.workspace_token),
so a name search is one GIN intersection within the workspace."""

from django.db import migrations


def add_workspace_tokens(apps, schema_editor):
    from apps.contacts.services import workspace_token

    Contact = apps.get_model("contacts", "Contact")
    with schema_editor.connection.cursor() as cursor:
        for workspace_id in Contact.objects.values_list("workspace_id", flat=True).distinct():
            token = workspace_token(workspace_id)
            cursor.execute(
                "UPDATE contacts_contact SET search_tokens = array_append(search_tokens, %s) "
                "WHERE workspace_id = %s AND NOT (search_tokens @> ARRAY[%s]::varchar(16)[])",
                [token, workspace_id, token],
            )


class Migration(migrations.Migration):
    dependencies = [("contacts", "0003_orders_stock")]

    operations = [migrations.RunPython(add_workspace_tokens, migrations.RunPython.noop)]
