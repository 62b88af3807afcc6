"""Every workspace-scoped page of the admin, whichever app registered it: a supervisor of
workspace A neither lists nor opens workspace B's rows. A new admin must add a maker below, or
this test fails and says so."""

import pytest
from django.contrib import admin
from django.utils import timezone

from apps.analytics.models import Event, Settings
from apps.broadcasts.models import Broadcast, BroadcastSettings, Campaign, Segment
from apps.connectors.models import MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.contacts.models import Contact, CustomFieldDefinition, Order, StockEvent, Tag
from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation, InboundEvent, Message, QuickReply
from apps.core.admin import WorkspaceScopedAdmin
from apps.workflows.definition import workflow_import
from apps.workflows.models import BotSettings, FaqEntry, Run
from apps.workspaces.models import ApiToken, AuditEntry, Membership, PrivacySettings
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel

pytestmark = pytest.mark.django_db


def _conversation(workspace):
    channel = make_whatsapp_channel(workspace)
    contact = contact_resolve(channel=channel, external_id=f"20100{workspace.pk:07}", name="Someone")
    return Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)


def _message(workspace):
    conversation = _conversation(workspace)
    return Message.objects.create(
        workspace=workspace,
        conversation=conversation,
        channel=conversation.channel,
        direction="in",
        sender_kind="contact",
        text="hi",
        state="received",
    )


def _workflow(workspace):
    return workflow_import(
        workspace=workspace,
        definition={
            "name": "Hidden flow",
            "trigger": "api",
            "steps": [{"key": "hi", "kind": "message", "settings": {"text": "Hi"}}],
        },
    )


def _run(workspace):
    workflow = _workflow(workspace)
    return Run.objects.create(
        workspace=workspace, conversation=_conversation(workspace), workflow=workflow, version=workflow.versions.get()
    )


def _broadcast(workspace):
    channel = make_whatsapp_channel(workspace)
    template = MessageTemplate.objects.create(workspace=workspace, channel=channel, name="promo", body="Hi {{1}}")
    return Broadcast.objects.create(workspace=workspace, name="Hidden promo", channel=channel, template=template)


def _campaign(workspace):
    channel = make_whatsapp_channel(workspace)
    template = MessageTemplate.objects.create(workspace=workspace, channel=channel, name="miss", body="Hi {{1}}")
    return Campaign.objects.create(
        workspace=workspace, name="Hidden campaign", kind="promo", channel=channel, template=template
    )


MAKERS = {
    "workspaces.workspace": lambda ws: ws,
    "workspaces.membership": lambda ws: Membership.objects.filter(workspace=ws).first(),
    "workspaces.team": None,  # the tenants fixture has one per workspace
    "workspaces.apitoken": lambda ws: ApiToken.objects.filter(workspace=ws).first(),
    "workspaces.auditentry": lambda ws: AuditEntry.objects.create(workspace=ws, action="view"),
    "workspaces.privacysettings": lambda ws: PrivacySettings.objects.create(workspace=ws, retention_days=30),
    "connectors.channel": make_whatsapp_channel,
    "connectors.messagetemplate": lambda ws: MessageTemplate.objects.create(
        workspace=ws, channel=make_whatsapp_channel(ws), name="order_shipped", body="Hi {{1}}"
    ),
    "contacts.contact": lambda ws: Contact.objects.create(workspace=ws, name="Hidden Person"),
    "contacts.tag": lambda ws: Tag.objects.create(workspace=ws, name="vip"),
    "contacts.customfielddefinition": lambda ws: CustomFieldDefinition.objects.create(
        workspace=ws, key="size", label="Size"
    ),
    "conversations.conversation": _conversation,
    "conversations.message": _message,
    "conversations.inboundevent": lambda ws: InboundEvent.objects.create(
        workspace=ws, channel=make_whatsapp_channel(ws), body="{}", headers={}, received_at=timezone.now()
    ),
    "conversations.quickreply": lambda ws: QuickReply.objects.create(workspace=ws, shortcut="hello", text="Hello!"),
    "contacts.order": lambda ws: Order.objects.create(workspace=ws, external_id="1001"),
    "contacts.stockevent": lambda ws: StockEvent.objects.create(workspace=ws, sku="EGG-30", in_stock=True),
    "connectors.webhooksubscription": lambda ws: WebhookSubscription.objects.create(
        workspace=ws, url="https://hooks.example/parley", events=["order.updated"]
    ),
    "workflows.workflow": _workflow,
    "workflows.run": _run,
    "workflows.faqentry": lambda ws: FaqEntry.objects.create(
        workspace=ws, intent="refund", language="en", examples=["where is my refund"], answer="Soon."
    ),
    "workflows.botsettings": lambda ws: BotSettings.objects.update_or_create(workspace=ws)[0],
    "broadcasts.segment": lambda ws: Segment.objects.create(workspace=ws, name="Hidden", definition={}),
    "broadcasts.broadcast": _broadcast,
    "broadcasts.campaign": _campaign,
    "broadcasts.broadcastsettings": lambda ws: BroadcastSettings.objects.get_or_create(workspace=ws)[0],
    "analytics.settings": lambda ws: Settings.objects.get_or_create(workspace=ws)[0],
    "analytics.event": lambda ws: Event.objects.create(workspace=ws, conversation=_conversation(ws), kind="opened"),
    "connectors.webhookdelivery": lambda ws: WebhookDelivery.objects.create(
        workspace=ws,
        subscription=WebhookSubscription.objects.create(
            workspace=ws, url="https://h.example/", events=["order.updated"]
        ),
        event="order.updated",
        payload={},
    ),
}


# Admins only owners open (supervisors get 403 everywhere, tests/trust/): checked with A's owner.
OWNER_ONLY = {"workspaces.auditentry", "workspaces.privacysettings"}


def scoped_models():
    return sorted(
        model._meta.label_lower
        for model, model_admin in admin.site._registry.items()
        if isinstance(model_admin, WorkspaceScopedAdmin)
    )


def test_every_scoped_admin_has_a_maker_here():
    assert set(scoped_models()) <= set(MAKERS), "add a maker for the new admin to MAKERS"


@pytest.mark.parametrize("label", scoped_models())
def test_supervisor_of_a_cannot_list_or_open_bs_rows(tenants, label):
    hidden = tenants.team_b if label == "workspaces.team" else MAKERS[label](tenants.b)
    app, model = label.split(".")
    client = client_for(tenants.owner if label in OWNER_ONLY else tenants.supervisor)

    listed = client.get(f"/admin/{app}/{model}/")
    opened = client.get(f"/admin/{app}/{model}/{hidden.pk}/change/")

    assert listed.status_code == 200
    assert hidden.pk not in {row.pk for row in listed.context["cl"].queryset}
    assert opened.status_code == 404
