"""The sender of broadcasts: creating one (CSV checks), its states and schedule in the workspace's
time zone, the audience written once per person, the rules checked per recipient, and sending
through the WhatsApp connector to the channel simulator over HTTP: pacing, rate-limit errors,
permanent failures, pause / resume / cancel, and a sender killed mid-way that resumes with every
recipient sent exactly once (compared with the simulator's outbox)."""

import os
import signal
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db.models import F
from django.utils import timezone

from apps.broadcasts import services
from apps.broadcasts.models import Broadcast, BroadcastSettings, Recipient, Segment
from apps.connectors.models import MessageTemplate
from apps.contacts.models import Contact, ContactIdentity, Tag
from apps.contacts.services import contact_index, contact_resolve
from apps.conversations.models import Conversation, Message
from apps.core.crypto import blind_index
from apps.core.exceptions import Conflict, DomainError
from apps.core.redis import get_redis
from tests.conftest import _spawn, _stop, _wait_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace

NUMBER_ID = "1000001"


# Builders ---------------------------------------------------------------------------------------


def make_template(channel, *, name="parley_promo", body="Hi {{1}}, {{2}} off fruit this week.", category="marketing"):
    return MessageTemplate.objects.create(
        workspace=channel.workspace, channel=channel, name=name, body=body, category=category
    )


def make_contact(workspace, *, name="", phone="", opted_in=True, tags=(), **fields) -> Contact:
    consent = {"whatsapp": {"opted_in": True, "at": "2025-01-01T00:00:00Z"}} if opted_in else {}
    contact = Contact(workspace=workspace, name=name, phone=phone, marketing_consent=consent, **fields)
    contact_index(contact)
    contact.save()
    for tag in tags:
        contact.tags.add(tag)
    return contact


def no_quiet_hours(workspace) -> None:
    BroadcastSettings.objects.update_or_create(
        workspace=workspace, defaults={"quiet_from": datetime.min.time(), "quiet_until": datetime.min.time()}
    )


def tag_broadcast(channel, template, tag, **fields) -> Broadcast:
    fields.setdefault("variables", [{"field": "contact.first_name", "fallback": "friend"}, {"value": "20%"}])
    return services.broadcast_create(
        workspace=channel.workspace,
        name=fields.pop("name", "Spring sale"),
        channel=channel,
        template=template,
        audience=Broadcast.Audience.TAG,
        tag=tag,
        **fields,
    )


def customers(workspace, tag, count: int, *, first: int = 1000, **fields) -> list[Contact]:
    return [
        make_contact(workspace, name=f"Customer {n}", phone=f"+2010{first + n:07d}", tags=[tag], **fields)
        for n in range(count)
    ]


def outbox(simulator) -> list[dict]:
    return simulator.get("/_simulator/outbox", phone_number_id=NUMBER_ID)


def accepted(simulator) -> Counter:
    """How many times each number was sent to (sends the provider accepted)."""
    return Counter(item["to"] for item in outbox(simulator) if item["http_status"] == 200)


def states(broadcast) -> Counter:
    return Counter(Recipient.objects.filter(broadcast=broadcast).values_list("state", flat=True))


def wait_for(predicate, timeout: float = 30, what: str = "the broadcast"):
    _wait_for(predicate, timeout, what)


def settle(broadcast, timeout: float = 30) -> Broadcast:
    """Runs the sender here (unless the suite's worker took the task first) and waits until no
    sender holds the broadcast."""
    services.broadcast_send(broadcast_id=broadcast.pk)
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).claimed_at is None, timeout, "the sender to let go")
    broadcast.refresh_from_db()
    return broadcast


def to_number(contact) -> str:
    return contact.phone.lstrip("+")


@pytest.fixture(autouse=True)
def _uploads_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def shop(db):
    workspace = make_workspace(name="Nile Basket", slug="nile", timezone="Africa/Cairo")
    no_quiet_hours(workspace)
    return workspace


@pytest.fixture
def channel(shop, simulator):
    channel = make_whatsapp_channel(shop, base_url=simulator.url)
    simulator.register(channel)
    simulator.post("/_simulator/settings", {"auto_status": "none"})
    return channel


@pytest.fixture
def vip(shop):
    return Tag.objects.create(workspace=shop, name="vip")


# Creating a broadcast ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_csv_with_bad_rows_is_refused_row_by_row_and_nothing_is_created(shop, vip):
    channel = make_whatsapp_channel(shop)
    template = make_template(channel)
    content = (
        b"phone;promo\n"
        b"+201001234567;SPRING10\n"
        b"+12;SPRING10\n"
        b"+201001234567;SPRING20\n"
        b"+201001234568;\n"
        b"not a number;X\n"
        b";Y\n"
        b"12;Z\n"
    )

    with pytest.raises(DomainError) as refused:
        services.broadcast_create(
            workspace=shop,
            name="Promo",
            channel=channel,
            template=template,
            variables=[{"field": "contact.first_name", "fallback": "friend"}, {"column": "promo"}],
            audience=Broadcast.Audience.CSV,
            csv_content=content,
        )

    assert refused.value.code == "invalid_csv"
    assert "6 bad row(s); nothing was created" in refused.value.detail
    assert refused.value.fields["csv"] == [
        "row 3: '+12' is not a phone number.",
        "row 4: +201001234567 is already on row 2",
        "row 5: “promo” is empty (it fills {{2}})",
        "row 6: 'not a number' is not a phone number.",
        "row 7: the phone is empty",
        "row 8: '12' is not a phone number.",
    ]
    assert not Broadcast.objects.exists()
    assert not Contact.objects.exists()


@pytest.mark.django_db
def test_a_csv_without_a_phone_column_or_in_another_encoding_says_so(shop):
    channel = make_whatsapp_channel(shop)
    template = make_template(channel)

    def create(content: bytes):
        with pytest.raises(DomainError) as refused:
            services.broadcast_create(
                workspace=shop,
                name="Promo",
                channel=channel,
                template=template,
                variables=[{"value": "A"}, {"value": "B"}],
                audience=Broadcast.Audience.CSV,
                csv_content=content,
            )
        return refused.value

    assert create(b"mobile,name\n+201001234567,A\n").fields["csv"] == [
        "The CSV needs a “phone” column (columns found: 'mobile', 'name')."
    ]
    assert "not UTF-8" in create("phone,name\n+201001234567,Zoë\n".encode("latin-1")).detail


@pytest.mark.django_db
def test_csv_rows_parse_reads_bom_semicolons_and_numbers_without_a_plus(shop):
    content = "\ufeffPhone;Promo\n201001234567;A1\n+20 100 123 4568;B2\n\n".encode()

    rows, errors = services.csv_rows_parse(workspace=shop, content=content)

    assert errors == []
    assert rows == [
        {"row": 2, "phone": "+201001234567", "values": {"promo": "A1"}},
        {"row": 3, "phone": "+201001234568", "values": {"promo": "B2"}},
    ]


@pytest.mark.django_db
def test_a_csv_audience_finds_or_makes_contacts_once_and_keeps_each_rows_values(shop):
    channel = make_whatsapp_channel(shop)
    template = make_template(channel)
    known = make_contact(shop, name="Amira Hassan", phone="+201001234567")
    broadcast = services.broadcast_create(
        workspace=shop,
        name="Promo",
        channel=channel,
        template=template,
        variables=[{"field": "contact.first_name", "fallback": "friend"}, {"column": "Promo"}],
        audience=Broadcast.Audience.CSV,
        csv_content=b"phone,promo\n+201001234567,A1\n+201001234568,B2\n",
    )
    assert b"+201001234567" not in broadcast.csv_file.open("rb").read()  # stored encrypted

    assert services.broadcast_audience_resolve(broadcast_id=broadcast.pk) == 2
    Broadcast.objects.filter(pk=broadcast.pk).update(audience_ready=False)
    assert services.broadcast_audience_resolve(broadcast_id=broadcast.pk) == 2  # a crash's re-run adds nothing

    recipients = {r.contact_id: r for r in Recipient.objects.filter(broadcast=broadcast)}
    assert recipients[known.pk].parameters == [None, "A1"]  # the name is read when it is sent
    new = Contact.objects.exclude(pk=known.pk).get()
    assert new.phone == "+201001234568" and new.country == "EG"
    assert recipients[new.pk].parameters == [None, "B2"]
    assert Contact.objects.count() == 2


@pytest.mark.django_db
def test_variables_must_map_every_template_variable_to_something_known(shop, vip):
    channel = make_whatsapp_channel(shop)
    template = make_template(channel)
    with pytest.raises(DomainError) as refused:
        tag_broadcast(channel, template, vip, variables=[{"field": "contact.shoe_size"}])

    assert refused.value.code == "invalid_broadcast"
    assert refused.value.fields["variables"][0] == "The template parley_promo has 2 variable(s); 1 given."
    assert "unknown field 'contact.shoe_size'" in refused.value.fields["variables"][1]


@pytest.mark.django_db
def test_a_template_of_another_channel_or_not_approved_is_refused(shop, vip):
    channel = make_whatsapp_channel(shop)
    paused = make_template(channel, name="paused_one")
    MessageTemplate.objects.filter(pk=paused.pk).update(status="paused")
    paused.refresh_from_db()

    with pytest.raises(DomainError) as refused:
        tag_broadcast(channel, paused, vip)

    assert refused.value.fields["template"] == ["The template paused_one is paused, not approved."]


@pytest.mark.django_db
def test_a_draft_can_be_edited_and_is_checked_again_as_a_whole(shop, vip):
    channel = make_whatsapp_channel(shop)
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_update(
        broadcast=broadcast, name="Spring sale, take 2", variables=[{"value": "A"}, {"value": "B"}]
    )
    with pytest.raises(DomainError) as refused:
        services.broadcast_update(broadcast=broadcast, audience=Broadcast.Audience.CSV)

    broadcast.refresh_from_db()
    assert (broadcast.name, broadcast.variables) == ("Spring sale, take 2", [{"value": "A"}, {"value": "B"}])
    assert refused.value.fields["csv"] == ["Upload a CSV with a phone column."]
    Broadcast.objects.filter(pk=broadcast.pk).update(state="running")
    broadcast.refresh_from_db()
    with pytest.raises(Conflict):
        services.broadcast_update(broadcast=broadcast, name="Too late")


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2030-01-01T22:30", "2030-01-02T09:00"),  # after quiet_from: the next morning
        ("2030-01-02T06:15", "2030-01-02T09:00"),  # before quiet_until: this morning
        ("2030-01-02T12:00", None),  # daytime
    ],
)
def test_quiet_hours_wrap_midnight_and_end_in_the_same_zone(local, expected):
    zone = ZoneInfo("Asia/Hong_Kong")
    quiet_from, quiet_until = datetime(2030, 1, 1, 21).time(), datetime(2030, 1, 1, 9).time()

    end = services.quiet_hours_end(datetime.fromisoformat(local).replace(tzinfo=zone), quiet_from, quiet_until)

    assert end == (datetime.fromisoformat(expected).replace(tzinfo=zone) if expected else None)


@pytest.mark.parametrize(
    ("phone", "country", "zone"),
    [
        ("+85291234567", "", "Asia/Hong_Kong"),
        ("+201001234567", "", "Africa/Cairo"),
        ("+14155550123", "", "America/Los_Angeles"),
        ("+447700900123", "", "Europe/London"),  # a mobile number: its country's zone
        ("", "AE", "Asia/Dubai"),  # no phone: the country's
        ("", "", "Asia/Hong_Kong"),  # nothing known: the workspace's
    ],
)
def test_a_contacts_time_zone_comes_from_their_number_else_country_else_the_workspace(phone, country, zone):
    contact = Contact(phone=phone, country=country)

    assert str(services.contact_timezone(contact, ZoneInfo("Asia/Hong_Kong"))) == zone


# States and schedule -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_broadcast_scheduled_at_11_in_hong_kong_starts_at_03_utc():
    workspace = make_workspace(slug="hk", timezone="Asia/Hong_Kong")
    channel = make_whatsapp_channel(workspace)
    tag = Tag.objects.create(workspace=workspace, name="vip")
    broadcast = tag_broadcast(channel, make_template(channel), tag)
    tomorrow = timezone.now().astimezone(ZoneInfo("Asia/Hong_Kong")).date() + timedelta(days=1)
    eleven = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 11, 0, tzinfo=ZoneInfo("Asia/Hong_Kong"))

    services.broadcast_schedule(broadcast=broadcast, at=eleven)

    broadcast.refresh_from_db()
    assert broadcast.state == "scheduled"
    assert broadcast.scheduled_at == datetime(
        tomorrow.year, tomorrow.month, tomorrow.day, 3, 0, tzinfo=ZoneInfo("UTC")
    )
    assert services.broadcasts_start_due(now=broadcast.scheduled_at - timedelta(minutes=1)) == 0
    assert Broadcast.objects.get(pk=broadcast.pk).state == "scheduled"
    assert services.broadcasts_start_due(now=broadcast.scheduled_at) == 1
    broadcast.refresh_from_db()
    assert broadcast.state == "running"
    assert broadcast.started_at is not None


@pytest.mark.django_db
def test_a_time_without_a_zone_or_in_the_past_cannot_be_scheduled(shop, vip):
    channel = make_whatsapp_channel(shop)
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    with pytest.raises(DomainError) as naive:
        services.broadcast_schedule(broadcast=broadcast, at=datetime(2031, 1, 1, 11, 0))
    with pytest.raises(DomainError) as past:
        services.broadcast_schedule(broadcast=broadcast, at=timezone.now() - timedelta(minutes=1))

    assert naive.value.code == past.value.code == "invalid_time"


@pytest.mark.django_db
def test_illegal_transitions_are_conflicts_that_say_why(shop, vip):
    channel = make_whatsapp_channel(shop)
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    with pytest.raises(Conflict) as resume:
        services.broadcast_resume(broadcast=broadcast)
    assert resume.value.detail == "This broadcast is draft; only a paused broadcast can be resumed."
    Broadcast.objects.filter(pk=broadcast.pk).update(state="completed")
    with pytest.raises(Conflict) as pause:
        services.broadcast_pause(broadcast=broadcast)
    assert pause.value.detail == "This broadcast is completed; only a running broadcast can be paused."
    with pytest.raises(Conflict):
        services.broadcast_cancel(broadcast=broadcast)


@pytest.mark.django_db
def test_a_scheduled_broadcast_can_be_cancelled_and_then_never_starts(shop, vip):
    channel = make_whatsapp_channel(shop)
    broadcast = tag_broadcast(channel, make_template(channel), vip, scheduled_at=timezone.now() + timedelta(hours=1))

    services.broadcast_cancel(broadcast=broadcast)

    assert services.broadcasts_start_due(now=timezone.now() + timedelta(hours=2)) == 0
    assert Broadcast.objects.get(pk=broadcast.pk).state == "cancelled"


# The audience ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_contacts_sharing_a_phone_are_one_recipient_the_one_known_on_the_channel(shop, vip):
    channel = make_whatsapp_channel(shop)
    older = make_contact(shop, name="Amira (old import)", phone="+201001234567", tags=[vip])
    known = make_contact(shop, name="Amira", phone="+201001234567", tags=[vip])
    ContactIdentity.objects.create(
        workspace=shop,
        contact=known,
        channel=channel,
        external_id="201001234567",
        external_id_index=blind_index("201001234567"),
    )
    phoneless = make_contact(shop, name="Omar", tags=[vip])
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    assert services.broadcast_audience_resolve(broadcast_id=broadcast.pk) == 2

    recipients = {r.contact_id: r.dedupe_key for r in Recipient.objects.filter(broadcast=broadcast)}
    assert set(recipients) == {known.pk, phoneless.pk}  # not the older one: WhatsApp knows this number as `known`
    assert older.pk < known.pk
    assert recipients[phoneless.pk] == f"c{phoneless.pk}"
    assert Broadcast.objects.get(pk=broadcast.pk).total == 2


@pytest.mark.django_db
def test_a_segment_audience_is_written_by_one_insert_and_merged_contacts_are_left_out(
    shop, vip, django_assert_max_num_queries
):
    channel = make_whatsapp_channel(shop)
    for n in range(30):
        make_contact(shop, name=f"C{n}", phone=f"+2010{n:08d}", tags=[vip] if n % 2 else [])
    merged = make_contact(shop, name="Gone", phone="+201099999999", tags=[vip])
    Contact.objects.filter(pk=merged.pk).update(merged_into=Contact.objects.exclude(pk=merged.pk).first())
    segment = Segment.objects.create(
        workspace=shop,
        name="VIP",
        definition={"match": "all", "conditions": [{"field": "tag", "op": "is", "value": "vip"}]},
    )
    broadcast = services.broadcast_create(
        workspace=shop,
        name="VIP",
        channel=channel,
        template=make_template(channel),
        variables=[{"field": "contact.first_name"}, {"value": "20%"}],
        audience=Broadcast.Audience.SEGMENT,
        segment=segment,
    )
    services._start(broadcast)  # copies the segment's conditions, as a start does

    with django_assert_max_num_queries(8):  # however many contacts
        assert services.broadcast_audience_resolve(broadcast_id=broadcast.pk) == 15

    assert Broadcast.objects.get(pk=broadcast.pk).audience_definition == segment.definition


# The rules, sending through the simulator -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_each_recipient_gets_the_template_with_their_own_values_in_the_whatsapp_wire_format(channel, vip, simulator):
    amira = make_contact(channel.workspace, name="Amira Hassan", phone="+201001234567", tags=[vip])
    nameless = make_contact(channel.workspace, phone="+201001234568", tags=[vip])
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert broadcast.state == "completed" and broadcast.finished_at is not None
    sent = {item["to"]: item["body"] for item in outbox(simulator)}
    template = sent[to_number(amira)]["template"]
    assert template["name"] == "parley_promo"
    assert [p["text"] for p in template["components"][0]["parameters"]] == ["Amira", "20%"]
    assert sent[to_number(nameless)]["template"]["components"][0]["parameters"][0]["text"] == "friend"
    recipient = Recipient.objects.get(broadcast=broadcast, contact=amira)
    assert sent[to_number(amira)]["biz_opaque_callback_data"] == f"broadcast:{broadcast.pk}:{recipient.pk}"
    assert recipient.state == "sent" and recipient.sent_at is not None
    message = recipient.message
    assert message.provider_id.startswith("wamid.")
    assert (message.kind, message.sender_kind, message.state) == ("template", "system", "sent")
    assert message.text == "Hi Amira, 20% off fruit this week."
    assert message.payload["broadcast_id"] == broadcast.pk and message.payload["recipient_id"] == recipient.pk
    # A conversation made for a broadcast is no work for agents until the customer answers.
    assert message.conversation.status == Conversation.Status.CLOSED


@pytest.mark.django_db(transaction=True)
def test_marketing_goes_only_to_contacts_opted_in_on_the_channel(channel, vip, simulator):
    keen = make_contact(channel.workspace, name="Keen", phone="+201001234567", tags=[vip])
    silent = make_contact(channel.workspace, name="Silent", phone="+201001234568", tags=[vip], opted_in=False)
    elsewhere = make_contact(channel.workspace, name="Elsewhere", phone="+201001234569", tags=[vip], opted_in=False)
    Contact.objects.filter(pk=elsewhere.pk).update(marketing_consent={"telegram": {"opted_in": True}})
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert set(accepted(simulator)) == {to_number(keen)}
    skipped = Recipient.objects.filter(broadcast=broadcast, state="skipped")
    assert {(r.contact_id, r.reason) for r in skipped} == {
        (silent.pk, services.Reason.NOT_OPTED_IN),
        (elsewhere.pk, services.Reason.NOT_OPTED_IN),
    }
    assert broadcast.state == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_utility_template_needs_no_marketing_opt_in(channel, vip, simulator):
    make_contact(channel.workspace, name="Silent", phone="+201001234568", tags=[vip], opted_in=False)
    broadcast = tag_broadcast(channel, make_template(channel, name="store_hours", category="utility"), vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert accepted(simulator) == {"201001234568": 1}


@pytest.mark.django_db(transaction=True)
def test_the_weekly_cap_skips_a_contact_who_had_enough_marketing_this_week(channel, vip, simulator):
    BroadcastSettings.objects.filter(workspace=channel.workspace).update(weekly_cap=1)
    template = make_template(channel)
    busy = make_contact(channel.workspace, name="Busy", phone="+201001234567", tags=[vip])
    fresh = make_contact(channel.workspace, name="Fresh", phone="+201001234568", tags=[vip])
    earlier = Broadcast.objects.create(
        workspace=channel.workspace, name="Last week's", channel=channel, template=template, state="completed"
    )
    Recipient.objects.create(
        workspace=channel.workspace,
        broadcast=earlier,
        contact=busy,
        dedupe_key="x",
        state="delivered",
        sent_at=timezone.now() - timedelta(days=2),
    )
    broadcast = tag_broadcast(channel, template, vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert set(accepted(simulator)) == {to_number(fresh)}
    assert Recipient.objects.get(broadcast=broadcast, contact=busy).reason == services.Reason.WEEKLY_CAP


@pytest.mark.django_db(transaction=True)
def test_quiet_hours_in_the_contacts_own_time_zone_defer_them_until_morning(channel, vip, simulator):
    hong_kong = ZoneInfo("Asia/Hong_Kong")
    local_now = timezone.now().astimezone(hong_kong)
    quiet_from = (local_now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    quiet_until = (local_now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    # Quiet now in Hong Kong; Cairo, 5 or 6 hours behind, is outside those hours.
    BroadcastSettings.objects.filter(workspace=channel.workspace).update(
        quiet_from=quiet_from, quiet_until=quiet_until
    )
    sleeper = make_contact(channel.workspace, name="Wing", phone="+85291234567", tags=[vip])
    awake = make_contact(channel.workspace, name="Amira", phone="+201001234567", tags=[vip])
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert set(accepted(simulator)) == {to_number(awake)}
    waiting = Recipient.objects.get(broadcast=broadcast, contact=sleeper)
    morning = local_now.replace(hour=quiet_until.hour, minute=quiet_until.minute, second=0, microsecond=0)
    if morning <= local_now:
        morning += timedelta(days=1)
    assert (waiting.state, waiting.reason) == ("queued", services.Reason.QUIET_HOURS)
    assert waiting.queued_at == morning
    assert broadcast.state == "running"  # not done: someone is still to be sent to
    # Beat leaves it alone until then.
    assert services.broadcasts_resume(now=timezone.now()) == 0


@pytest.mark.django_db(transaction=True)
def test_the_numbers_daily_messaging_limit_makes_the_rest_wait_for_the_next_day(channel, vip, simulator):
    channel.settings = {**channel.settings, "messaging_limit": 2}
    channel.save(update_fields=["settings"])
    customers(channel.workspace, vip, 5)
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert sum(accepted(simulator).values()) == 2
    waiting = Recipient.objects.filter(broadcast=broadcast, state="queued")
    assert waiting.count() == 3
    assert {r.reason for r in waiting} == {services.Reason.DAILY_LIMIT}
    first_sent = Recipient.objects.filter(broadcast=broadcast, state="sent").order_by("sent_at").first().sent_at
    assert {r.queued_at for r in waiting} == {first_sent + timedelta(hours=24)}
    assert broadcast.state == "running"


@pytest.mark.django_db(transaction=True)
def test_unreachable_numbers_and_missing_values_are_skipped_with_the_reason(channel, vip, simulator):
    gone = contact_resolve(channel=channel, external_id="201001234567", name="Gone", phone="+201001234567")
    gone.tags.add(vip)
    ContactIdentity.objects.filter(contact=gone).update(reachable=False)
    phoneless = make_contact(channel.workspace, name="Omar", tags=[vip])
    nameless = make_contact(channel.workspace, phone="+201001234568", tags=[vip])
    fine = make_contact(channel.workspace, name="Layla", phone="+201001234569", tags=[vip])
    template = make_template(channel, name="store_hours", category="utility")
    broadcast = tag_broadcast(channel, template, vip, variables=[{"field": "contact.first_name"}, {"value": "9%"}])

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    reasons = dict(Recipient.objects.filter(broadcast=broadcast).values_list("contact_id", "reason"))
    assert reasons == {
        gone.pk: services.Reason.UNREACHABLE,
        phoneless.pk: services.Reason.NO_ADDRESS,
        nameless.pk: "no value for {{1}} (contact.first_name)",
        fine.pk: "",
    }
    assert accepted(simulator) == {to_number(fine): 1}


@pytest.mark.django_db(transaction=True)
def test_two_contacts_sharing_a_phone_get_the_broadcast_once(channel, vip, simulator):
    make_contact(channel.workspace, name="Amira", phone="+201001234567", tags=[vip])
    make_contact(channel.workspace, name="Amira H.", phone="+201001234567", tags=[vip])
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert accepted(simulator) == {"201001234567": 1}
    assert broadcast.total == 1


@pytest.mark.django_db(transaction=True)
def test_permanent_failures_stop_the_recipient_with_the_reason_on_it_and_its_message(channel, vip, simulator):
    type(channel).objects.filter(pk=channel.pk).update(rate_limit_per_second=20)  # one thread: sends in order
    invalid, opted_out, fine = customers(channel.workspace, vip, 3)
    broadcast = tag_broadcast(channel, make_template(channel), vip, variables=[{"value": "A"}, {"value": "B"}])
    simulator.post("/_simulator/faults", {"phone_number_id": NUMBER_ID, "code": 131026, "count": 1})
    simulator.post("/_simulator/faults", {"phone_number_id": NUMBER_ID, "code": 131049, "count": 1})

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    by_contact = {r.contact_id: r for r in Recipient.objects.filter(broadcast=broadcast).select_related("message")}
    assert by_contact[invalid.pk].state == "failed" and by_contact[invalid.pk].reason.startswith("131026: ")
    assert by_contact[invalid.pk].message.error_code == "131026"
    assert by_contact[opted_out.pk].state == "failed" and by_contact[opted_out.pk].reason.startswith("131049: ")
    assert by_contact[fine.pk].state == "sent"
    # 131026: the number is not on WhatsApp; 131049 is Meta's marketing limit for that person only.
    assert not ContactIdentity.objects.get(contact=invalid).reachable
    assert ContactIdentity.objects.get(contact=opted_out).reachable
    assert broadcast.state == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_customer_who_stopped_marketing_on_whatsapp_is_opted_out_here_too(channel, vip, simulator):
    stopped, fine = customers(channel.workspace, vip, 2)
    type(channel).objects.filter(pk=channel.pk).update(rate_limit_per_second=20)  # one thread: sends in order
    broadcast = tag_broadcast(channel, make_template(channel), vip)
    simulator.post("/_simulator/faults", {"phone_number_id": NUMBER_ID, "code": 131050, "count": 1})

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    stopped.refresh_from_db()
    fine.refresh_from_db()
    assert stopped.marketing_consent["whatsapp"]["opted_in"] is False
    assert stopped.marketing_consent["whatsapp"]["source"] == "provider"
    assert "whatsapp" not in (fine.marketing_consent or {}) or fine.marketing_consent["whatsapp"]["opted_in"]


@pytest.mark.django_db(transaction=True)
def test_refused_credentials_pause_the_broadcast_and_lose_no_recipient(channel, vip, simulator):
    customers(channel.workspace, vip, 3)
    broadcast = tag_broadcast(channel, make_template(channel), vip)
    simulator.post("/_simulator/faults", {"phone_number_id": NUMBER_ID, "code": 190, "count": 1})

    services.broadcast_start(broadcast=broadcast)
    settle(broadcast)

    assert broadcast.state == "paused"
    assert broadcast.paused_reason.startswith("paused") or "190" in broadcast.paused_reason
    assert states(broadcast)["queued"] + states(broadcast)["sent"] == 3
    assert not Message.objects.filter(state__in=("queued", "sending")).exists()  # nothing left half-sent


# Live: the suite's worker sends ---------------------------------------------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_rate_limit_errors_slow_the_pace_and_every_message_is_still_delivered(
    shop, vip, simulator, live_server_process, celery_worker_process
):
    channel = make_whatsapp_channel(shop, base_url=simulator.url)
    simulator.register(channel, webhook_url=f"{live_server_process.url}/webhooks/{channel.uuid}/")
    simulator.post("/_simulator/settings", {"auto_status": "delivered", "status_delay": 0.05})
    people = customers(shop, vip, 20)
    broadcast = tag_broadcast(channel, make_template(channel), vip)
    simulator.post("/_simulator/faults", {"phone_number_id": NUMBER_ID, "code": 130429, "count": 3})
    started = time.monotonic()

    services.broadcast_start(broadcast=broadcast)
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).state == "completed", 60)

    assert time.monotonic() - started >= 2  # each 130429 made the whole number wait
    sends = outbox(simulator)
    assert [item["response"]["error"]["code"] for item in sends if item["http_status"] != 200] == [130429] * 3
    assert accepted(simulator) == {to_number(c): 1 for c in people}
    messages = Message.objects.filter(payload__broadcast_id=broadcast.pk)
    wait_for(lambda: set(messages.values_list("state", flat=True)) == {"delivered"}, 60, "the statuses")
    assert messages.count() == 20


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_pause_stops_sending_and_resume_finishes_with_everyone_once(channel, vip, simulator, celery_worker_process):
    type(channel).objects.filter(pk=channel.pk).update(rate_limit_per_second=10)
    people = customers(channel.workspace, vip, 30)
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    wait_for(lambda: states(broadcast)["sent"] >= 5)
    services.broadcast_pause(broadcast=Broadcast.objects.get(pk=broadcast.pk))
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).claimed_at is None, what="the sender to stop")
    stopped_at = sum(accepted(simulator).values())
    time.sleep(1)

    assert sum(accepted(simulator).values()) == stopped_at == states(broadcast)["sent"]
    assert states(broadcast)["queued"] == 30 - stopped_at
    assert not Message.objects.filter(state__in=("queued", "sending")).exists()

    services.broadcast_resume(broadcast=Broadcast.objects.get(pk=broadcast.pk))
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).state == "completed")
    assert accepted(simulator) == {to_number(c): 1 for c in people}
    assert states(broadcast) == {"sent": 30}


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_cancel_skips_everyone_not_yet_sent_and_nothing_more_leaves(channel, vip, simulator, celery_worker_process):
    type(channel).objects.filter(pk=channel.pk).update(rate_limit_per_second=10)
    customers(channel.workspace, vip, 30)
    broadcast = tag_broadcast(channel, make_template(channel), vip)

    services.broadcast_start(broadcast=broadcast)
    wait_for(lambda: states(broadcast)["sent"] >= 5)
    services.broadcast_cancel(broadcast=Broadcast.objects.get(pk=broadcast.pk))
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).claimed_at is None, what="the sender to stop")
    time.sleep(1)

    sent = states(broadcast)["sent"]
    assert sum(accepted(simulator).values()) == sent
    assert states(broadcast) == {"sent": sent, "skipped": 30 - sent}
    assert set(Recipient.objects.filter(broadcast=broadcast, state="skipped").values_list("reason", flat=True)) == {
        "cancelled"
    }
    broadcast.refresh_from_db()
    assert broadcast.state == "cancelled" and broadcast.finished_at is not None


KILLABLE_SENDER = """
import sys
import django
django.setup()
from apps.broadcasts.models import Broadcast
from apps.broadcasts.services import broadcast_send, broadcast_start
broadcast_start(broadcast=Broadcast.objects.get(pk=int(sys.argv[1])))
broadcast_send(broadcast_id=int(sys.argv[1]))
"""


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_sender_killed_mid_broadcast_resumes_with_no_one_skipped_and_no_one_sent_twice(
    channel, vip, simulator, live_env, celery_worker_process, tmp_path
):
    type(channel).objects.filter(pk=channel.pk).update(rate_limit_per_second=20)  # one sending thread
    shop = channel.workspace
    people = customers(shop, vip, 60)
    broadcast = tag_broadcast(channel, make_template(channel), vip)
    messages = Message.objects.filter(payload__broadcast_id=broadcast.pk)

    # The sender runs in its own process, away from the suite's worker and queue, to be killed.
    prefix = f"broadcast-kill-{os.getpid()}"
    env = {**live_env, "DJANGO_SETTINGS_MODULE": "config.settings", "REDIS_KEY_PREFIX": prefix, "CELERY_QUEUE": prefix}
    log = tmp_path / "sender.log"
    sender = _spawn([sys.executable, "-c", KILLABLE_SENDER, str(broadcast.pk)], env, log)
    try:
        wait_for(lambda: sum(accepted(simulator).values()) >= 15, 30, "the first sends")
        # The next send is held 4 s by the provider, then accepted: the worker dies waiting for it.
        simulator.post("/_simulator/faults", {"phone_number_id": NUMBER_ID, "mode": "timeout", "delay": 4, "count": 1})
        wait_for(lambda: messages.filter(state="sending", provider_id="").exists(), 10, "the held send")
        time.sleep(0.5)
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
    finally:
        if sender.poll() is None:
            _stop(sender)
        keys = list(get_redis().scan_iter(match=f"{prefix}*"))
        if keys:
            get_redis().delete(*keys)
    held = messages.get(state="sending", provider_id="")
    before = states(broadcast)
    assert before["sent"] >= 15 and before["sent"] + before["queued"] + before["sending"] == 60
    time.sleep(4.5)  # the provider answers the held send (nobody hears it) and takes it

    # Three minutes later, the claim is stale: beat gives the broadcast to the suite's worker.
    Broadcast.objects.filter(pk=broadcast.pk).update(claimed_at=F("claimed_at") - timedelta(minutes=3))
    messages.filter(state="sending").update(claimed_at=F("claimed_at") - timedelta(minutes=3))
    assert services.broadcasts_resume(now=timezone.now()) == 1
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).state == "completed", 60, "the resumed broadcast")

    # Every customer got it exactly once: the simulator's outbox is the proof.
    assert accepted(simulator) == {to_number(c): 1 for c in people}
    assert messages.count() == 60
    after = states(broadcast)
    # The one on the wire when the worker died did leave, but nobody heard the answer: it is failed
    # as interrupted for a person to check, never sent again. (With statuses flowing, the
    # provider's status for it would confirm it as sent: broadcast_send_confirm, tested below.)
    held.refresh_from_db()
    assert held.error_code == "interrupted"
    assert Recipient.objects.get(message=held).reason.startswith("interrupted: ")
    assert after == {"sent": 59, "failed": 1}
    assert "Traceback" not in log.read_text()


@pytest.mark.django_db
def test_a_status_for_a_send_whose_answer_was_lost_confirms_it(shop, vip):
    channel = make_whatsapp_channel(shop)
    contact = make_contact(shop, name="Amira", phone="+201001234567", tags=[vip])
    broadcast = tag_broadcast(channel, make_template(channel), vip)
    services.broadcast_audience_resolve(broadcast_id=broadcast.pk)
    recipient = Recipient.objects.get(broadcast=broadcast)
    conversation = Conversation.objects.create(workspace=shop, contact=contact, channel=channel)
    message = Message.objects.create(
        workspace=shop,
        conversation=conversation,
        channel=channel,
        direction="out",
        sender_kind="system",
        kind="template",
        state="failed",
        error_code="interrupted",
        payload={"broadcast_id": broadcast.pk, "recipient_id": recipient.pk},
    )
    Recipient.objects.filter(pk=recipient.pk).update(state="failed", reason="interrupted: …", message=message)

    assert not services.broadcast_send_confirm(channel=channel, provider_id="wamid.X", opaque="something else")
    assert services.broadcast_send_confirm(
        channel=channel, provider_id="wamid.X", opaque=services.opaque_for(broadcast.pk, recipient.pk)
    )

    message.refresh_from_db()
    recipient.refresh_from_db()
    assert (message.state, message.provider_id, message.error_code) == ("sent", "wamid.X", "")
    assert (recipient.state, recipient.reason) == ("sent", "")
