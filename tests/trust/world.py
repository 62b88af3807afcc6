"""Two workspaces with one of everything, for the isolation matrix (tests/trust/test_isolation_matrix.py).

Every object of a workspace carries that workspace's marker in a text a page or the API shows
(a name, a message, a label), so a response of workspace B that contains A's marker has leaked
A's data, whatever its status. `populate` makes one object of every tenant model the URL conf
serves; a model with no object here makes the matrix fail and name the model to add.
"""

from dataclasses import dataclass, field
from datetime import time

from django.core.files.base import ContentFile
from django.utils import timezone

MARKER_A = "alpha7secret"
MARKER_B = "beta7secret"


@dataclass
class Tenant:
    """One workspace: its owner and an agent, its API token, and one object per model label."""

    marker: str
    workspace: object
    owner: object
    agent: object
    token: str
    objects: dict = field(default_factory=dict)

    def get(self, label: str):
        return self.objects[label]


@dataclass
class World:
    a: Tenant
    b: Tenant


def build_world() -> World:
    return World(a=_tenant("alpha", MARKER_A), b=_tenant("beta", MARKER_B))


def _tenant(slug: str, marker: str) -> Tenant:
    from apps.workspaces import services
    from apps.workspaces.models import Role
    from tests.factories import make_member, make_user, make_workspace

    workspace = make_workspace(name=f"{slug.title()} {marker}", slug=slug)
    owner = make_member(workspace, Role.OWNER, make_user(username=f"{marker}-owner", first_name=marker))
    agent = make_member(workspace, Role.AGENT, make_user(username=f"{marker}-agent", first_name=marker))
    _, token = services.api_token_create(workspace=workspace, name=f"{marker} order system")
    tenant = Tenant(marker, workspace, owner.user, agent.user, token)
    tenant.objects = populate(workspace, marker, owner=owner, agent=agent)
    return tenant


def populate(workspace, marker: str, *, owner, agent) -> dict:
    """One object of every tenant model, each showing `marker`, keyed by its model label."""
    from apps.workspaces.models import AgentStatus, ApiToken, ShiftException

    objects = {
        "workspaces.workspace": workspace,
        "workspaces.membership": agent,
        "workspaces.agentstatus": AgentStatus.objects.get(membership=agent),
        "workspaces.apitoken": ApiToken.objects.get(workspace=workspace),
        "workspaces.user": owner.user,
    }
    objects.update(_team(workspace, marker, agent))
    objects["workspaces.shiftexception"] = ShiftException.objects.create(
        workspace=workspace, team=objects["workspaces.team"], date=timezone.localdate(), closed=True, reason=marker
    )
    objects.update(_channels(workspace, marker))
    objects.update(_conversation(workspace, marker, objects["connectors.channel"], owner))
    objects.update(_contacts(workspace, marker, objects["contacts.contact"]))
    objects.update(_webhooks(workspace, marker))
    objects.update(_broadcasts(workspace, marker, objects))
    objects.update(_workflows(workspace, marker, objects["conversations.conversation"]))
    objects.update(_analytics(workspace))
    objects.update(_audit(workspace, marker, owner))
    return objects


def _audit(workspace, marker, owner) -> dict:
    from django.apps import apps

    try:  # the audit log and privacy settings (issue 10's privacy part) may land after this file
        AuditEntry = apps.get_model("workspaces", "AuditEntry")
        PrivacySettings = apps.get_model("workspaces", "PrivacySettings")
    except LookupError:
        return {}
    entry = AuditEntry.objects.create(
        workspace=workspace, actor=owner.user, actor_label=marker, action="change", object_repr=marker
    )
    privacy = PrivacySettings.objects.get_or_create(workspace=workspace)[0]
    return {"workspaces.auditentry": entry, "workspaces.privacysettings": privacy}


def _team(workspace, marker, agent) -> dict:
    from tests.factories import make_shift, make_team

    team = make_team(workspace, name=f"Orders {marker}", members=[agent])
    return {"workspaces.team": team, "workspaces.shift": make_shift(team, starts_at=time(0), ends_at=time(23, 59))}


def _channels(workspace, marker) -> dict:
    from apps.connectors.models import Channel

    whatsapp = Channel.objects.create(
        workspace=workspace,
        kind="whatsapp",
        name=f"Support {marker}",
        credentials={
            "access_token": f"token-{marker}",
            "app_secret": f"secret-{marker}",
            "phone_number_id": "1000001",
            "waba_id": "WABA1",
        },
        settings={"base_url": "http://127.0.0.1:9"},  # nothing listens: no request leaves the test
    )
    webchat = Channel.objects.create(
        workspace=workspace,
        kind="webchat",
        name=f"Website {marker}",
        settings={"allowed_origins": ["http://shop.test"], "title": f"Chat {marker}"},
    )
    return {"connectors.channel": whatsapp, "webchat": webchat}


def _conversation(workspace, marker, channel, owner) -> dict:
    """A customer's message through the real inbound pipeline, with a file, a note and a
    notification, so every read of a conversation has something of A's to show."""
    from apps.connectors.base import InboundMessage
    from apps.conversations.models import Attachment, InboundEvent, Notification, QuickReply
    from apps.conversations.services import inbound_message_apply
    from apps.conversations.services.actions import notify

    inbound = InboundMessage(
        provider_id=f"wamid.{marker}",
        sender_id="201001234567",
        sender_name=f"Amira {marker}",
        sender_phone="+201001234567",
        timestamp=timezone.now(),
        kind="text",
        text=f"Where is my order {marker}?",
    )
    message = inbound_message_apply(channel=channel, inbound=inbound)
    conversation = message.conversation
    attachment = Attachment(
        workspace=workspace, message=message, filename=f"{marker}.pdf", content_type="application/pdf", state="stored"
    )
    attachment.file.save(f"{marker}.pdf", ContentFile(f"%PDF-1.4 {marker}".encode()), save=True)
    notify(recipient=owner, kind=Notification.Kind.ASSIGNED, conversation=conversation, message=message)
    event = InboundEvent.objects.create(
        workspace=workspace, channel=channel, body=f'{{"text": "{marker}"}}', headers={}, received_at=timezone.now()
    )
    return {
        "contacts.contact": conversation.contact,
        "contacts.contactidentity": conversation.contact.identities.get(),
        "conversations.conversation": conversation,
        "conversations.message": message,
        "conversations.attachment": attachment,
        "conversations.notification": Notification.objects.get(recipient=owner),
        "conversations.inboundevent": event,
        "conversations.quickreply": QuickReply.objects.create(workspace=workspace, shortcut="hello", text=marker),
    }


def _contacts(workspace, marker, contact) -> dict:
    from apps.contacts.models import CustomFieldDefinition, Order, StockEvent, Tag

    tag = Tag.objects.create(workspace=workspace, name=f"vip-{marker}")
    contact.tags.add(tag)
    return {
        "contacts.tag": tag,
        "contacts.customfielddefinition": CustomFieldDefinition.objects.create(
            workspace=workspace, key="size", label=f"Size {marker}"
        ),
        "contacts.order": Order.objects.create(workspace=workspace, contact=contact, external_id=f"order-{marker}"),
        "contacts.stockevent": StockEvent.objects.create(workspace=workspace, sku=f"sku-{marker}", in_stock=True),
    }


def _webhooks(workspace, marker) -> dict:
    from apps.connectors.models import WebhookDelivery, WebhookSubscription

    subscription = WebhookSubscription.objects.create(
        workspace=workspace, url=f"https://{marker}.example/hook", events=["order.updated"], description=marker
    )
    delivery = WebhookDelivery.objects.create(
        workspace=workspace, subscription=subscription, event="order.updated", payload={"order": marker}
    )
    return {"connectors.webhooksubscription": subscription, "connectors.webhookdelivery": delivery}


def _broadcasts(workspace, marker, objects) -> dict:
    from apps.broadcasts.models import Broadcast, BroadcastSettings, Campaign, Recipient, Segment
    from apps.connectors.models import MessageTemplate

    channel, contact = objects["connectors.channel"], objects["contacts.contact"]
    template = MessageTemplate.objects.create(
        workspace=workspace, channel=channel, name="promo", body=f"Hi {{{{1}}}}, {marker}", status="approved"
    )
    segment = Segment.objects.create(
        workspace=workspace,
        name=f"Segment {marker}",
        definition={
            "match": "all",
            "conditions": [{"field": "tag", "op": "is", "value": objects["contacts.tag"].name}],
        },
    )
    broadcast = Broadcast.objects.create(
        workspace=workspace, name=f"Promo {marker}", channel=channel, template=template, segment=segment
    )
    recipient = Recipient.objects.create(
        workspace=workspace, broadcast=broadcast, contact=contact, dedupe_key=marker, parameters=[marker]
    )
    campaign = Campaign.objects.create(
        workspace=workspace, name=f"Campaign {marker}", kind="promo", channel=channel, template=template
    )
    return {
        "connectors.messagetemplate": template,
        "broadcasts.segment": segment,
        "broadcasts.broadcast": broadcast,
        "broadcasts.recipient": recipient,
        "broadcasts.campaign": campaign,
        "broadcasts.broadcastsettings": BroadcastSettings.objects.get_or_create(
            workspace=workspace, defaults={"stop_confirmation": {"en": marker}}
        )[0],
    }


def _workflows(workspace, marker, conversation) -> dict:
    from apps.workflows.definition import workflow_import
    from apps.workflows.models import BotSettings, FaqEntry, Run, RunLog

    workflow = workflow_import(
        workspace=workspace,
        definition={
            "name": f"Flow {marker}",
            "trigger": "api",
            "steps": [{"key": "hi", "kind": "message", "settings": {"text": f"Hi {marker}"}}],
        },
    )
    version = workflow.versions.get()
    run = Run.objects.create(
        workspace=workspace,
        conversation=conversation,
        workflow=workflow,
        version=version,
        variables={"secret": marker},
        callback_token=f"cb-{marker}-0123456789",
    )
    RunLog.objects.create(
        workspace=workspace,
        run=run,
        workflow=workflow,
        version=1,
        step="hi",
        kind="message",
        outcome="go",
        detail=marker,
    )
    return {
        "workflows.workflow": workflow,
        "workflows.step": workflow.steps.get(),
        "workflows.workflowversion": version,
        "workflows.run": run,
        "workflows.faqentry": FaqEntry.objects.create(
            workspace=workspace, intent="refund", language="en", examples=["where is my refund"], answer=marker
        ),
        "workflows.botsettings": BotSettings.objects.update_or_create(
            workspace=workspace, defaults={"handover_text": {"en": marker}}
        )[0],
    }


def _analytics(workspace) -> dict:
    """The conversation's events folded into cycles and rollups, so reports have rows of A's."""
    from apps.analytics.models import Cycle, Event, Settings
    from apps.analytics.services import events_fold_all

    events_fold_all()
    return {
        "analytics.event": Event.objects.filter(workspace=workspace).first(),
        "analytics.cycle": Cycle.objects.filter(workspace=workspace).first(),
        "analytics.settings": Settings.objects.get_or_create(workspace=workspace)[0],
    }
