"""Every connector's parser against mutated provider payloads (tests/trust/fuzz_payloads.py).

Two properties, for each channel:
- the parser alone, for any body, raises only ParseError or returns well-formed neutral events
  (strings where strings go, ids that fit their column, JSON that PostgreSQL's jsonb can hold);
- through the real webhook (validly signed) and the inbound drainer, a delivery never gets a
  5xx and ends either applied or parked as failed with its error (visible in the admin, replayable),
  never half-stored: no duplicate message on a redelivery, no conversation without its message.

CI runs a small, fixed set of examples; `make fuzz` runs thousands (FUZZ_EXAMPLES)."""

from datetime import datetime

import pytest
from django.test import Client
from hypothesis import given

from apps.connectors.base import InboundEdit, InboundMessage, ParseError, ReachabilityUpdate, StatusUpdate
from apps.connectors.models import Channel
from apps.connectors.registry import connector_for
from apps.conversations.models import Attachment, Conversation, InboundEvent, Message
from apps.conversations.services import inbound_event_store, inbound_events_drain
from tests.factories import make_workspace
from tests.trust.fuzz_payloads import TARGETS, delivery, drain_slots_held, fuzz_settings, is_finite_json

KINDS = sorted(TARGETS)
MESSAGE_KINDS = set(Message.Kind.values)


def make_channel(kind: str) -> Channel:
    workspace = make_workspace()
    if TARGETS[kind].make_channel is None:
        return Channel.objects.create(workspace=workspace, kind=kind, name=f"{kind} channel")
    return TARGETS[kind].make_channel(workspace)


# The parser alone ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_parser_raises_only_parse_error_or_returns_well_formed_events(kind, db):
    channel = make_channel(kind)
    connector = connector_for(channel)

    @given(body=delivery(TARGETS[kind]))
    @fuzz_settings(ci_examples=100)
    def check(body):
        raw, content_type = body
        try:
            events = connector.parse(channel, raw, {"Content-Type": content_type})
        except ParseError:
            return
        assert isinstance(events, list)
        for event in events:
            assert_neutral(event)

    check()


def assert_neutral(event) -> None:
    assert isinstance(event, InboundMessage | InboundEdit | StatusUpdate | ReachabilityUpdate), event
    assert isinstance(event.timestamp, datetime) and event.timestamp.tzinfo is not None
    if isinstance(event, InboundMessage):
        assert_id(event.provider_id)
        assert_strings(event.sender_id, event.text, event.sender_name, event.sender_phone, event.sender_email)
        assert_strings(event.reply_to_provider_id, event.customer_id, *event.thread_ids)
        assert event.sender_id.strip() and event.kind in MESSAGE_KINDS
        assert isinstance(event.payload, dict) and is_finite_json(event.payload)
        for media in (event.media, *event.extra_media):
            assert media is None or (isinstance(media, dict) and is_finite_json(media)), media
            assert media is None or all(isinstance(media.get(name, ""), str) for name in ("id", "mime_type"))
    elif isinstance(event, InboundEdit):
        assert_id(event.provider_id)
        assert_strings(event.text)
        assert isinstance(event.payload, dict) and is_finite_json(event.payload)
    elif isinstance(event, StatusUpdate):
        assert_strings(event.provider_id, event.state, event.recipient_id, event.error_code, event.error_reason)
        assert_strings(event.opaque)
        assert event.watermark is not None or (event.provider_id and len(event.provider_id) <= 191)
    else:
        assert_strings(event.sender_id, event.sender_name, event.reason)
        assert event.sender_id.strip() and isinstance(event.reachable, bool)


def assert_id(value) -> None:
    assert_strings(value)
    assert 0 < len(value) <= 191, f"an id of {len(value)} characters does not fit Message.provider_id"


def assert_strings(*values) -> None:
    for value in values:
        assert isinstance(value, str), f"{value!r} is not a string"
        assert is_finite_json(value), f"{value[:80]!r} cannot be stored in PostgreSQL"


# Through the webhook and the drainer ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", KINDS)
def test_a_mutated_delivery_is_never_a_5xx_and_ends_applied_or_parked_with_its_error(kind):
    target, channel = TARGETS[kind], make_channel(kind)
    client = Client()

    @given(body=delivery(target))
    @fuzz_settings(ci_examples=15, share=0.1)  # a webhook and a drain each: ~0.2 s an example
    def check(body):
        raw, content_type = body
        stored = InboundEvent.objects.count()
        for attempt in range(2):  # the provider delivers it twice: the second must change nothing
            with drain_slots_held():
                if target.post is None:
                    inbound_event_store(channel=channel, body=raw, headers={"Content-Type": content_type})
                else:
                    response = target.post(client, channel, raw, content_type)
                    assert response.status_code < 500, response.content[:500]
                inbound_events_drain(slot=0, seconds=600)
            if attempt == 0:
                messages = Message.objects.filter(channel=channel).count()
        assert Message.objects.filter(channel=channel).count() == messages, "a redelivery stored a second message"
        for event in InboundEvent.objects.filter(channel=channel).order_by("id")[stored:]:
            assert_applied_or_parked(event)
        assert_nothing_half_stored(channel)

    check()


def assert_applied_or_parked(event: InboundEvent) -> None:
    """Applied; or failed with its error for a supervisor to see and replay; or (only a status
    for a message Parley has not recorded yet) waiting for its retry, without an error."""
    event.refresh_from_db()
    if event.state == InboundEvent.State.PROCESSED:
        return
    assert event.state == InboundEvent.State.FAILED or (event.state == "pending" and not event.error), (
        f"delivery {event.pk} left {event.state} after {event.attempts} attempt(s): {event.error[:1500]}"
    )
    assert event.state != InboundEvent.State.FAILED or event.error, "parked without saying why"


def assert_nothing_half_stored(channel: Channel) -> None:
    assert not Conversation.objects.filter(channel=channel, messages__isnull=True).exists()
    assert not Attachment.objects.filter(message__channel=channel, message__isnull=True).exists()
    inbound = Message.objects.filter(channel=channel, direction=Message.Direction.INBOUND)
    assert not inbound.filter(conversation__contact__isnull=True).exists()
