from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('connectors', '0003_webhooks'),
        ('contacts', '0004_contact_workspace_token'),
        ('conversations', '0003_inbox'),
        ('workspaces', '0003_order_lookup'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='conversation',
            name='conversation_mine',
        ),
        migrations.RemoveIndex(
            model_name='conversation',
            name='conversation_team',
        ),
        migrations.AddField(
            model_name='inboundevent',
            name='claimed_at',
            field=models.DateTimeField(blank=True, help_text='When a worker took it to apply.', null=True),
        ),
        migrations.AddIndex(
            model_name='conversation',
            index=models.Index(fields=['workspace', '-last_message_at', '-id'], name='conversation_recent'),
        ),
        migrations.AddIndex(
            model_name='conversation',
            index=models.Index(fields=['workspace', 'assignee', '-last_message_at', '-id'], name='conversation_mine_recent'),
        ),
        migrations.AddIndex(
            model_name='conversation',
            index=models.Index(fields=['workspace', 'team', '-last_message_at', '-id'], name='conversation_team_recent'),
        ),
        migrations.AddIndex(
            model_name='inboundevent',
            index=models.Index(condition=models.Q(('state', 'pending')), fields=['id'], name='inbound_event_pending'),
        ),
    ]
