"""The email channel: SendGrid-style inbound-parse posts and IMAP polling in, SMTP out, against
the channel simulator's SMTP and IMAP servers on loopback."""

import base64
import socket

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.connectors.base import ErrorClass, OutboundMessage, ProviderError
from apps.connectors.models import Channel
from apps.connectors.providers.email import EmailConnector, reply_subject
from apps.connectors.services import Visitor, webchat_prechat_submit
from apps.connectors.simulator import build_simulator
from apps.contacts.models import ContactIdentity
from apps.contacts.services import contact_resolve
from apps.conversations.models import Attachment, Conversation, DeliveryState, InboundEvent, Message
from apps.conversations.services import (
    SendLater,
    attachment_fetch,
    inbound_event_process,
    inbound_event_store,
    message_deliver,
    message_send,
)
from tests.connectors.email_payloads import (
    ADDRESS,
    PDF,
    PNG,
    inbound_parse,
    inbound_parse_raw,
    make_email_channel,
    mime,
    post,
)
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_member, make_workspace

CUSTOMER = "amira@example.com"


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def channel(db):
    return make_email_channel(make_workspace(name="Nile Basket", slug="nile"))


def deliver(channel, raw: bytes, shape=inbound_parse):
    """Posts a mail as the provider would and applies it as the worker would."""
    body, content_type = shape(raw)
    response = post(channel, body, content_type)
    assert response.status_code == 200, response.content
    inbound_event_process(event_id=InboundEvent.objects.latest("id").id)


def process_pending():
    for event_id in InboundEvent.objects.filter(state=InboundEvent.State.PENDING).values_list("id", flat=True):
        inbound_event_process(event_id=event_id)


# Inbound by webhook ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_a_post_without_the_channels_key_is_401_and_nothing_is_stored(channel, key):
    body, content_type = inbound_parse(mime())

    response = post(channel, body, content_type, key=key)

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert not InboundEvent.objects.exists()


def test_basic_auth_with_the_verify_token_as_password_is_accepted(channel):
    body, content_type = inbound_parse(mime())
    credentials = base64.b64encode(f"sendgrid:{channel.verify_token}".encode()).decode()

    response = post(channel, body, content_type, key="", HTTP_AUTHORIZATION=f"Basic {credentials}")

    assert response.status_code == 200
    assert InboundEvent.objects.count() == 1


def test_a_plain_email_becomes_a_message_from_the_senders_address(channel):
    deliver(channel, mime("Where is my order?\n\nThanks,\nAmira", sender="Amira@Example.com"))

    message = Message.objects.get()
    assert (message.kind, message.text) == ("text", "Where is my order?\n\nThanks,\nAmira")
    assert message.provider_id == "CAN_P_JMvV7ZpAQ@mail.gmail.com"
    assert message.payload["subject"] == "Order #1001"
    assert message.payload["to"] == [ADDRESS]
    contact = message.conversation.contact
    assert (contact.name, contact.email) == ("Amira Said", CUSTOMER)


def test_an_html_only_email_is_sanitised_and_its_words_are_the_text(channel):
    html = (
        '<div>Hello <b onclick="steal()">team</b>,<br>my eggs were broken.<script>alert(1)</script>'
        '<style>p{color:red}</style><img src="https://tracker.example/p.gif"><img src="cid:photo1">'
        ' <a href="https://shop.example/orders/1001">See the order</a></div>'
    )

    deliver(channel, mime(None, html=html))

    message = Message.objects.get()
    assert message.text == "Hello team,\nmy eggs were broken. See the order"
    shown = message.payload["html"]
    assert "<script" not in shown and "alert" not in shown and "onclick" not in shown and "color:red" not in shown
    assert "tracker.example" not in shown  # a remote picture is a read receipt for the sender
    assert 'src="cid:photo1"' in shown
    assert 'href="https://shop.example/orders/1001"' in shown


def test_quoted_history_and_the_signature_are_cut_from_the_shown_text(channel):
    reply = (
        "Yes, please send it tomorrow.\n\n-- \nAmira Said\nCairo\n\n"
        "On Mon, Jan 1, 2024 at 10:00 AM Nile Basket <\nhelp@shop.example> wrote:\n\n"
        "> Your order ships today.\n> Shall we deliver tomorrow?\n"
    )

    deliver(channel, mime(reply))

    assert Message.objects.get().text == "Yes, please send it tomorrow."


def test_outlooks_quoted_block_is_cut_too(channel):
    reply = (
        "Please cancel it.\n\n________________________________\n"
        "From: Nile Basket <help@shop.example>\nSent: Monday, January 1, 2024 10:00 AM\n"
        "To: Amira Said\nSubject: Your order\n\nYour order ships today."
    )

    deliver(channel, mime(reply))

    assert Message.objects.get().text == "Please cancel it."


@pytest.mark.parametrize("shape", [inbound_parse, inbound_parse_raw], ids=["default", "raw"])
def test_an_arabic_mail_keeps_its_words_and_subject(channel, shape):
    deliver(channel, mime("أين طلبي؟", subject="طلب رقم 1001", name="أميرة"), shape)

    message = Message.objects.get()
    assert (message.text, message.payload["subject"]) == ("أين طلبي؟", "طلب رقم 1001")
    assert message.conversation.contact.name == "أميرة"


def test_a_mail_with_only_a_subject_says_it_in_the_subject(channel):
    deliver(channel, mime("", subject="Where is my order?"))

    assert Message.objects.get().text == "Where is my order?"


@pytest.mark.parametrize("shape", [inbound_parse, inbound_parse_raw], ids=["default", "raw"])
def test_attachments_and_inline_pictures_are_stored_and_read_back_from_our_storage(channel, shape):
    files = (("receipt.pdf", "application/pdf", PDF, ""), ("photo.png", "image/png", PNG, "photo1"))
    raw = mime("The receipt and a photo", html='<p>See <img src="cid:photo1"></p>', files=files)

    deliver(channel, raw, shape)

    message = Message.objects.get()
    assert (message.kind, message.text) == ("media", "The receipt and a photo")
    for attachment in Attachment.objects.filter(message=message):
        attachment_fetch(attachment_id=attachment.id)
    stored = {a.filename: a for a in Attachment.objects.filter(message=message)}
    assert set(stored) == {"receipt.pdf", "photo.png"}
    assert all(a.state == Attachment.State.STORED for a in stored.values())
    assert stored["receipt.pdf"].file.read() == PDF
    assert (stored["photo.png"].content_type, stored["photo.png"].file.read()) == ("image/png", PNG)


def test_parsing_the_same_mail_twice_points_to_the_same_stored_files(channel):
    body, content_type = inbound_parse(mime("Receipt", files=(("receipt.pdf", "application/pdf", PDF, ""),)))
    headers = {"Content-Type": content_type}

    first = EmailConnector().parse(channel, body, headers)[0].media
    second = EmailConnector().parse(channel, body, headers)[0].media

    assert first["id"] == second["id"]
    assert first["id"].startswith(f"email/{channel.id}/")


def test_a_reply_to_our_message_joins_its_conversation_even_from_another_address(channel):
    deliver(channel, mime("Where is my order?", message_id="first@mail.example.com"))
    conversation = Conversation.objects.get()
    ours = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction=Message.Direction.OUTBOUND,
        sender_kind=Message.Sender.AGENT,
        kind="text",
        text="It ships today.",
        provider_id="1704103200.1.42@shop.example",
        state=DeliveryState.SENT,
    )

    colleague = mime(
        "I am Amira's husband: please deliver after 6 pm.",
        sender="omar@example.com",
        name="Omar",
        message_id="second@mail.example.com",
        in_reply_to=ours.provider_id,
        references=("first@mail.example.com",),
    )
    deliver(channel, colleague)

    reply = Message.objects.get(provider_id="second@mail.example.com")
    assert reply.conversation_id == conversation.id
    assert reply.reply_to_id == ours.id
    assert reply.payload["references"] == ["first@mail.example.com", ours.provider_id]


def test_the_same_message_id_delivered_twice_and_both_ways_makes_one_message(channel):
    raw = mime("Hello", message_id="once@mail.example.com")

    deliver(channel, raw)
    deliver(channel, raw)
    deliver(channel, raw, inbound_parse_raw)

    assert Message.objects.count() == 1
    assert InboundEvent.objects.filter(state=InboundEvent.State.PROCESSED).count() == 3


def test_a_mail_without_a_message_id_is_still_stored_once(channel):
    raw = mime("No id here", message_id="")

    deliver(channel, raw, inbound_parse_raw)
    deliver(channel, raw, inbound_parse_raw)

    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    "headers",
    [{"Auto-Submitted": "auto-replied"}, {"X-Autoreply": "yes"}, {"Precedence": "auto_reply"}],
    ids=["auto-submitted", "x-autoreply", "precedence"],
)
def test_an_out_of_office_answer_is_not_a_customer_message(channel, headers):
    deliver(channel, mime("I am away until Monday.", headers=headers))

    assert not Message.objects.exists()
    assert InboundEvent.objects.get().state == InboundEvent.State.PROCESSED


def _bounce(message_id: str) -> bytes:
    """A delivery status notification (RFC 3464) as Gmail's MAILER-DAEMON sends it."""
    return (
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        f"To: {ADDRESS}\r\nSubject: Delivery Status Notification (Failure)\r\n"
        "Message-ID: <bounce-1@mx.google.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
        "Address not found: your message wasn't delivered to gone@example.com.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; googlemail.com\r\n\r\n"
        "Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does not exist.\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: Nile Basket <{ADDRESS}>\r\nTo: gone@example.com\r\nSubject: Re: Order\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "--B--\r\n"
    ).encode()


@pytest.mark.parametrize("shape", [inbound_parse, inbound_parse_raw], ids=["default", "raw"])
def test_a_bounce_of_our_mail_marks_it_failed_with_the_servers_reason(channel, shape):
    contact = contact_resolve(channel=channel, external_id="gone@example.com", email="gone@example.com")
    conversation = Conversation.objects.create(workspace=channel.workspace, contact=contact, channel=channel)
    ours = Message.objects.create(
        workspace=channel.workspace,
        conversation=conversation,
        channel=channel,
        direction=Message.Direction.OUTBOUND,
        sender_kind=Message.Sender.AGENT,
        kind="text",
        text="Your order",
        provider_id="1704103200.7.9@shop.example",
        state=DeliveryState.SENT,
    )

    deliver(channel, _bounce(ours.provider_id), shape)

    ours.refresh_from_db()
    assert ours.state == DeliveryState.FAILED
    assert ours.error_code == "bounce 5.1.1"
    assert "does not exist" in ours.error_reason
    assert Message.objects.count() == 1  # the bounce itself is not a customer message
    # no such mailbox (5.1.1): nothing more is queued to that address
    assert ContactIdentity.objects.get(channel=channel, contact=contact).reachable is False


def test_a_bounce_of_mail_we_never_sent_is_dropped(channel):
    deliver(channel, _bounce("someone-else@other.example"), inbound_parse_raw)

    assert not Message.objects.exists()
    assert InboundEvent.objects.get().state == InboundEvent.State.PROCESSED


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"hello": "world"}', "application/json"),
        (
            b'--xYzZY\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--xYzZY--\r\n',
            "multipart/form-data; boundary=xYzZY",
        ),
        (b"just some words", "text/plain"),
    ],
    ids=["json", "form-without-mail", "words"],
)
def test_a_body_that_is_not_an_email_is_kept_as_failed_never_a_500(channel, body, content_type):
    response = post(channel, body, content_type)
    inbound_event_process(event_id=InboundEvent.objects.get().id)

    assert response.status_code == 200
    event = InboundEvent.objects.get()
    assert event.state == InboundEvent.State.FAILED and event.error
    assert not Message.objects.exists()


def test_one_contact_across_web_chat_and_email_by_the_address_given_in_the_pre_chat_form(channel):
    webchat = Channel.objects.create(workspace=channel.workspace, kind="webchat", name="Website")
    webchat_prechat_submit(channel=webchat, visitor=Visitor(id="visitor-1"), name="Amira", email="Amira@Example.com")
    known = ContactIdentity.objects.get(channel=webchat).contact

    deliver(channel, mime("It is me again, by mail this time"))

    assert Conversation.objects.get(channel=channel).contact_id == known.id


def test_a_whatsapp_customer_whose_email_is_known_is_the_same_contact_by_mail(channel):
    whatsapp = make_whatsapp_channel(channel.workspace)
    known = contact_resolve(
        channel=whatsapp, external_id="201001234567", name="Amira", phone="+201001234567", email=CUSTOMER
    )

    deliver(channel, mime("Hello from my laptop"))

    assert Conversation.objects.get(channel=channel).contact_id == known.id


# The simulator's posts are what Parley reads ---------------------------------------------------


@pytest.mark.parametrize("send_raw", [False, True], ids=["default", "raw"])
def test_the_simulators_inbound_parse_post_is_read_like_sendgrids(channel, send_raw):
    provider = build_simulator().providers["email"]
    registration = provider.register_channel(
        {
            "kind": "email",
            "address": ADDRESS,
            "name": "Nile Basket",
            "webhook_url": f"http://127.0.0.1:8000/webhooks/{channel.uuid}/?key={channel.verify_token}",
            "send_raw": send_raw,
        }
    )
    record = provider.customer_event(registration, CUSTOMER, {"name": "Amira", "text": "Hi!", "attachment": True})
    url, body, headers = provider.webhook(registration, record)

    response = Client().post(url.removeprefix("http://127.0.0.1:8000"), body, content_type=headers["Content-Type"])
    inbound_event_process(event_id=InboundEvent.objects.get().id)

    assert response.status_code == 200
    message = Message.objects.get()
    assert (message.text, message.provider_id) == ("Hi!", record["id"])
    assert Attachment.objects.get(message=message).filename == "receipt.pdf"


# Inbound by IMAP --------------------------------------------------------------------------------


@pytest.fixture
def mailbox_channel(db, simulator):
    """A channel that polls the simulator's IMAP server and sends through its SMTP server."""
    ports = simulator.get("/_simulator/mail/servers", kind="email")
    channel = make_email_channel(
        make_workspace(name="Nile Basket", slug="nile"),
        smtp_port=ports["smtp_port"],
        imap_host="127.0.0.1",
        imap_port=ports["imap_port"],
        imap_security="none",
    )
    simulator.post(
        "/_simulator/channels",
        {
            "kind": "email",
            "address": ADDRESS,
            "name": "Nile Basket",
            "mode": "imap",
            "smtp_password": "smtp-secret",
            "imap_password": "imap-secret",
        },
    )
    return channel


def customer_writes(simulator, text="", **fields):
    body = {"kind": "email", "channel": ADDRESS, "user": CUSTOMER, "name": "Amira Said", "text": text, "wait": True}
    return simulator.post("/_simulator/inbound", {**body, **fields})


def poll(channel) -> int:
    return EmailConnector().poll(
        channel, lambda body, headers: inbound_event_store(channel=channel, body=body, headers=headers)
    )


def test_polling_imap_stores_unseen_mail_marks_it_seen_and_takes_nothing_twice(mailbox_channel, simulator):
    customer_writes(simulator, "Is my order on its way?", subject="Order #1001", attachment=True)

    assert poll(mailbox_channel) == 1
    process_pending()

    message = Message.objects.get()
    assert (message.kind, message.text) == ("media", "Is my order on its way?")
    assert message.payload["subject"] == "Order #1001"
    assert Attachment.objects.get(message=message).filename == "receipt.pdf"
    assert simulator.get("/_simulator/mailbox", kind="email", channel=ADDRESS)[0]["flags"] == ["\\Seen"]
    assert poll(mailbox_channel) == 0


def test_a_mail_seen_again_after_a_crash_before_it_was_flagged_is_stored_once(mailbox_channel, simulator):
    customer_writes(simulator, "Hello")

    with pytest.raises(RuntimeError):
        EmailConnector().poll(mailbox_channel, lambda body, headers: _store_then_crash(mailbox_channel, body, headers))
    assert poll(mailbox_channel) == 1
    process_pending()

    assert Message.objects.count() == 1


def _store_then_crash(channel, body, headers):
    inbound_event_store(channel=channel, body=body, headers=headers)
    raise RuntimeError("worker killed")


def test_a_wrong_imap_password_is_a_credentials_error_and_no_imap_host_polls_nothing(mailbox_channel):
    mailbox_channel.credentials = {**mailbox_channel.credentials, "imap_password": "wrong"}

    with pytest.raises(ProviderError) as raised:
        poll(mailbox_channel)

    assert raised.value.error_class == ErrorClass.CREDENTIALS
    mailbox_channel.settings = {k: v for k, v in mailbox_channel.settings.items() if not k.startswith("imap")}
    assert poll(mailbox_channel) == 0


# Outbound over SMTP -----------------------------------------------------------------------------


@pytest.fixture
def conversation(mailbox_channel, simulator):
    customer_writes(simulator, "Where is my order?", subject="Re: RE: Order #1001")
    poll(mailbox_channel)
    process_pending()
    return Conversation.objects.get()


@pytest.fixture
def agent(conversation):
    return make_member(conversation.workspace).user


def sent_mail(simulator):
    return simulator.get("/_simulator/outbox", kind="email", channel=ADDRESS)[-1]


def test_a_reply_goes_out_over_smtp_threaded_under_the_customers_mail(conversation, agent, simulator):
    customers = Message.objects.get(direction="in")
    message = message_send(conversation=conversation, author=agent, text="It ships today.\nThank you!")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert message.state == DeliveryState.SENT
    mail = sent_mail(simulator)
    headers = mail["headers"]
    assert headers["Message-ID"] == f"<{message.provider_id}>" and message.provider_id.endswith("@shop.example")
    assert headers["In-Reply-To"] == f"<{customers.provider_id}>"
    assert headers["References"] == f"<{customers.provider_id}>"
    assert headers["Subject"] == "Re: Order #1001"
    assert headers["From"] == f"Nile Basket <{ADDRESS}>"
    assert (mail["user"], mail["text"]) == (CUSTOMER, "It ships today.\nThank you!")
    assert "It ships today.<br>" in mail["html"]


def test_a_file_goes_out_as_an_attachment(conversation, agent, simulator):
    upload = SimpleUploadedFile("receipt.pdf", PDF, content_type="application/pdf")
    message = message_send(conversation=conversation, author=agent, text="Your receipt", upload=upload)

    message_deliver(message_id=message.id)

    mail = sent_mail(simulator)
    assert mail["type"] == "media" and mail["text"] == "Your receipt"
    assert mail["attachments"] == [{"filename": "receipt.pdf", "mime_type": "application/pdf", "size": len(PDF)}]


def test_a_menu_goes_out_numbered_and_the_customers_2_comes_back_as_the_second_option(
    conversation, agent, simulator, mailbox_channel
):
    options = [{"id": "orders", "title": "Order status"}, {"id": "human", "title": "Talk to a person"}]
    menu = message_send(
        conversation=conversation,
        author=agent,
        text="How can we help?",
        kind="interactive",
        payload={"options": options},
    )
    message_deliver(message_id=menu.id)
    assert (
        sent_mail(simulator)["text"]
        == "How can we help?\n\nReply with a number:\n1. Order status\n2. Talk to a person"
    )

    menu.refresh_from_db()
    customer_writes(simulator, "2")  # answers the menu mail, quoting it below, as a mail client does
    poll(mailbox_channel)
    process_pending()

    answer = Message.objects.filter(direction="in").latest("id")
    assert answer.conversation_id == conversation.id
    assert (answer.kind, answer.text) == ("interactive", "Talk to a person")
    assert answer.payload["reply_id"] == "human"
    assert answer.payload["in_reply_to"] == menu.provider_id


def test_a_refused_recipient_fails_the_message_and_stops_sending_to_them(conversation, agent, simulator):
    simulator.post("/_simulator/settings", {"kind": "email", "bouncing": [CUSTOMER]})
    message = message_send(conversation=conversation, author=agent, text="Hello?")

    message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert (message.state, message.error_code) == (DeliveryState.FAILED, "550 5.1.1")
    assert not ContactIdentity.objects.get(channel=conversation.channel).reachable


def test_a_temporary_smtp_refusal_is_retried_later(conversation, agent, simulator):
    simulator.post(
        "/_simulator/faults", {"kind": "email", "channel": ADDRESS, "status": 451, "body": "4.3.0 Try later"}
    )
    message = message_send(conversation=conversation, author=agent, text="Hello")

    with pytest.raises(SendLater):
        message_deliver(message_id=message.id)

    message.refresh_from_db()
    assert (message.state, message.error_code) == (DeliveryState.QUEUED, "451 4.3.0")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "error_class", "code"),
    [
        ("bouncing", ErrorClass.STOP_RECIPIENT, "550 5.1.1"),
        ("greylisted", ErrorClass.RETRY, "451 4.7.1"),
        ("spam", ErrorClass.FATAL, "554 5.7.1"),
        ("wrong password", ErrorClass.CREDENTIALS, "535 5.7.8"),
        ("nobody listening", ErrorClass.RETRY, "network"),
    ],
)
def test_smtp_refusals_are_classified(mailbox_channel, simulator, case, error_class, code):
    if case == "bouncing":
        simulator.post("/_simulator/settings", {"kind": "email", "bouncing": [CUSTOMER]})
    if case in ("greylisted", "spam"):
        said = {"greylisted": "4.7.1 Greylisted, try again", "spam": "5.7.1 Message rejected as spam"}[case]
        simulator.post(
            "/_simulator/faults", {"kind": "email", "channel": ADDRESS, "status": int(code[:3]), "body": said}
        )
    if case == "wrong password":
        mailbox_channel.credentials = {"smtp_password": "wrong"}
    if case == "nobody listening":
        mailbox_channel.settings = {**mailbox_channel.settings, "smtp_port": _closed_port()}

    with pytest.raises(ProviderError) as raised:
        EmailConnector().send(mailbox_channel, OutboundMessage(recipient_id=CUSTOMER, kind="text", text="Hi"))

    assert (raised.value.error_class, raised.value.code) == (error_class, code)


def test_a_new_thread_gets_a_subject_of_its_own_and_replies_never_stack_re():
    assert reply_subject("", "Nile Basket") == "Message from Nile Basket"
    assert reply_subject("Re: RE: re:Order #1001", "Nile Basket") == "Re: Order #1001"
    assert reply_subject("AW: Bestellung", "Nile Basket") == "Re: Bestellung"


# The customer page's path: the simulator posts to a live Parley ---------------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_customer_mail_from_the_simulator_reaches_a_live_parley(live_server_process, simulator):
    channel = make_email_channel(make_workspace(slug="nile-live"))
    webhook_url = f"{live_server_process.url}/webhooks/{channel.uuid}/?key={channel.verify_token}"
    simulator.post(
        "/_simulator/channels", {"kind": "email", "address": ADDRESS, "name": "Nile", "webhook_url": webhook_url}
    )

    answer = customer_writes(simulator, "Do you deliver to Giza?", attachment=True)

    assert answer["status"] == 200
    inbound_event_process(event_id=InboundEvent.objects.get(channel=channel).id)
    message = Message.objects.get(channel=channel)
    assert (message.text, message.sender_kind) == ("Do you deliver to Giza?", "contact")
    assert Attachment.objects.get(message=message).filename == "receipt.pdf"
