"""What every channel shares: a supervisor saving a channel connects it with its provider, beat
polls mailboxes, a customer who tells their phone later joins their other history, and the
inbox knows each channel's window."""

import pytest
from django.test import Client
from django.test.utils import override_settings

from apps.connectors import tasks
from apps.connectors.models import Channel
from apps.contacts.models import Contact, ContactIdentity
from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation, InboundEvent, Message
from apps.conversations.services import conversation_for_outbound, inbound_event_process
from apps.workspaces.models import Role
from tests.connectors import telegram_payloads as tg
from tests.connectors.email_payloads import ADDRESS, make_email_channel
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_workspace


@pytest.fixture
def workspace(db):
    return make_workspace(name="Nile Basket", slug="nile")


def supervisor_client(workspace):
    client = Client()
    client.force_login(make_member(workspace, Role.OWNER).user)
    return client


def add_telegram_channel(client, workspace, simulator, token=tg.BOT_TOKEN):
    return client.post(
        "/admin/connectors/channel/add/",
        {
            "workspace": workspace.pk,
            "kind": "telegram",
            "name": "Nile bot",
            "enabled": "on",
            "credentials": f'{{"bot_token": "{token}"}}',
            "settings": f'{{"base_url": "{simulator.url}"}}',
            "rate_limit_per_second": 30,
        },
        follow=True,
    )


def test_saving_a_telegram_bot_in_the_admin_sets_its_webhook_with_the_secret(workspace, simulator):
    simulator.post("/_simulator/channels", {"kind": "telegram", "bot_token": tg.BOT_TOKEN, "username": "NileBot"})

    response = add_telegram_channel(supervisor_client(workspace), workspace, simulator)

    assert response.status_code == 200
    channel = Channel.objects.get(workspace=workspace, kind="telegram")
    (call,) = [c for c in simulator.get("/_simulator/outbox", kind="telegram") if c.get("method") == "setWebhook"]
    assert call["body"]["url"] == channel.webhook_url
    assert call["body"]["secret_token"] == tg.webhook_secret(channel)


def test_a_bot_token_telegram_refuses_is_shown_and_the_channel_kept(workspace, simulator):
    response = add_telegram_channel(supervisor_client(workspace), workspace, simulator, token="1:not-a-bot")

    assert Channel.objects.filter(workspace=workspace, kind="telegram").exists()
    shown = [str(m) for m in response.context["messages"]]
    assert any("Telegram refused to connect it" in m for m in shown), shown


def test_beat_polls_every_mailbox_and_stores_what_is_new(workspace, simulator):
    ports = simulator.get("/_simulator/mail/servers", kind="email")
    channel = make_email_channel(
        workspace, smtp_port=ports["smtp_port"], imap_host="127.0.0.1", imap_port=ports["imap_port"]
    )
    channel.settings["imap_security"] = "none"
    channel.save(update_fields=["settings"])
    make_email_channel(make_workspace(slug="webhook-only"))  # no imap_host: nothing to poll
    simulator.post(
        "/_simulator/channels",
        {"kind": "email", "address": ADDRESS, "mode": "imap", "imap_password": "imap-secret"},
    )
    simulator.post(
        "/_simulator/inbound",
        {"kind": "email", "channel": ADDRESS, "user": "amira@example.com", "text": "Eggs?", "wait": True},
    )

    with override_settings(CELERY_TASK_ALWAYS_EAGER=True):
        tasks.poll_channels()
        tasks.poll_channels()  # nothing new the second time

    (event,) = InboundEvent.objects.filter(channel=channel)
    inbound_event_process(event_id=event.id)
    assert Message.objects.get(channel=channel).text == "Eggs?"


def test_a_telegram_customer_who_shares_their_phone_later_joins_their_whatsapp_history(workspace, simulator):
    whatsapp = make_whatsapp_channel(workspace)
    known = contact_resolve(channel=whatsapp, external_id="201001234567", name="Amira", phone="+201001234567")
    telegram = tg.make_telegram_channel(workspace, base_url=simulator.url)
    client = Client()

    for update in (tg.text("/start", 1), tg.contact("+201001234567")):
        assert tg.post_update(client, telegram, update).status_code == 200
        inbound_event_process(event_id=InboundEvent.objects.latest("id").id)

    identity = ContactIdentity.objects.get(channel=telegram)
    assert identity.contact_id == known.pk
    assert Conversation.objects.get(channel=telegram).contact_id == known.pk
    assert Contact.objects.filter(workspace=workspace, merged_into__isnull=True).count() == 1


def test_an_email_channel_reaches_a_contact_who_never_wrote_there_by_their_address(workspace):
    whatsapp = make_whatsapp_channel(workspace)
    contact = contact_resolve(channel=whatsapp, external_id="201001234567", name="Amira", email="Amira@Example.com")
    email = make_email_channel(workspace)

    conversation = conversation_for_outbound(contact=contact, channel=email)

    assert conversation.channel == email
    assert ContactIdentity.objects.get(channel=email).external_id == "amira@example.com"


def test_the_inbox_knows_messengers_longer_window_for_a_persons_reply(workspace):
    Channel.objects.create(workspace=workspace, kind="messenger", name="Page", credentials={"page_id": "1"})
    client = supervisor_client(workspace)

    page = client.get(f"/inbox/?workspace={workspace.slug}")

    assert page.status_code == 200
    assert '"human_reply_window_hours": 168' in page.content.decode()
