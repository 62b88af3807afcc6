"""What the fuzzers found (tests/trust/test_fuzz_parsers.py, tests/api/test_schema_fuzz.py), each
kept as a plain example: before the fix, these payloads broke a webhook or the API with a 500, or
broke a parser or a write with a TypeError or DataError that the drainer retried five times before
parking it with a traceback."""

import json

import pytest
from django.test import Client

from apps.conversations.models import InboundEvent, Message
from apps.conversations.services import inbound_events_drain
from apps.workspaces.services import api_token_create
from tests.conftest import token_client
from tests.connectors import telegram_payloads as telegram
from tests.connectors.test_custom import make_custom_channel
from tests.connectors.test_custom import post as custom_post
from tests.connectors.wechat_payloads import location, make_wechat_channel, push_url, signed_query
from tests.conversations import whatsapp
from tests.factories import make_workspace
from tests.trust.fuzz_payloads import drain_slots_held

DEEP = b"[" * 100_000


@pytest.fixture
def workspace(db):
    return make_workspace()


def drain() -> InboundEvent:
    """Applies what the webhook stored, as the worker's drainer would; the delivery as it ended."""
    with drain_slots_held():
        inbound_events_drain(slot=0, seconds=60)
    return InboundEvent.objects.latest("id")


def post_whatsapp(channel, *messages):
    raw = json.dumps(whatsapp.envelope(whatsapp.messages_value(*messages))).encode()
    response = whatsapp.post_webhook(Client(), channel, raw)
    assert response.status_code == 200
    return drain()


def test_a_body_nested_too_deep_for_json_is_parked_at_once_with_its_reason(workspace):
    channel = whatsapp.make_whatsapp_channel(workspace)

    response = whatsapp.post_webhook(Client(), channel, DEEP)
    event = drain()

    assert response.status_code == 200
    assert (event.state, event.attempts) == ("failed", 1)
    assert event.error.startswith("not JSON: maximum recursion depth exceeded")


def test_the_custom_channel_answers_400_not_500_to_a_body_nested_too_deep(workspace):
    response = custom_post(make_custom_channel(workspace), DEEP)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not JSON: maximum recursion depth exceeded")
    assert not InboundEvent.objects.exists()


def test_telegram_acknowledges_a_body_nested_too_deep_and_parks_it(workspace):
    channel = telegram.make_telegram_channel(workspace)

    response = telegram.post_update(Client(), channel, DEEP)

    assert response.status_code == 200
    assert drain().state == "failed"


def test_a_whatsapp_message_whose_id_is_a_list_is_parked_with_what_is_wrong(workspace):
    channel = whatsapp.make_whatsapp_channel(workspace)

    event = post_whatsapp(channel, {**whatsapp.text("hi", wamid="x"), "id": ["wamid.1"]})

    assert (event.state, event.attempts) == ("failed", 1)
    assert event.error == "InboundMessage.provider_id is list, not text"
    assert not Message.objects.exists()


def test_a_message_id_longer_than_parley_keeps_is_parked_not_retried(workspace):
    channel = whatsapp.make_whatsapp_channel(workspace)

    event = post_whatsapp(channel, whatsapp.text("hi", wamid="wamid." + "A" * 300))

    assert (event.state, event.attempts) == ("failed", 1)
    assert event.error == "InboundMessage.provider_id has 306 characters; at most 191 fit"


def test_telegram_names_of_the_wrong_type_park_the_update_instead_of_crashing_the_parser(workspace):
    channel = telegram.make_telegram_channel(workspace)
    update = telegram.text("hi")
    update["message"]["from"] = {**telegram.AMIRA, "first_name": True}

    telegram.post_update(Client(), channel, update)
    event = drain()

    assert event.state == "failed"
    assert event.error.startswith("malformed telegram delivery: TypeError: sequence item 0: expected str")


def test_nul_characters_and_lone_surrogates_are_dropped_and_the_message_is_kept(workspace):
    channel = whatsapp.make_whatsapp_channel(workspace)
    message = whatsapp.text("where\u0000 is my order \ud800?", wamid="wamid.nul")

    raw = json.dumps(whatsapp.envelope(whatsapp.messages_value(message, name="Ami\u0000ra"))).encode()
    whatsapp.post_webhook(Client(), channel, raw)
    event = drain()

    assert event.state == "processed"
    stored = Message.objects.get(provider_id="wamid.nul")
    assert stored.text == "where is my order \ufffd?"
    assert stored.conversation.contact.name == "Amira"


def test_a_location_at_nan_is_kept_without_coordinates(workspace):
    channel = make_wechat_channel(workspace)
    body = location(msg_id=6_000_000_009).replace(b"23.134521", b"nan")

    response = Client().post(push_url(channel, signed_query()), body, content_type="text/xml")
    event = drain()

    assert response.status_code == 200 and event.state == "processed"
    assert Message.objects.get().payload["latitude"] is None


def test_a_button_press_on_a_menu_whose_chat_id_has_a_nul_is_kept(workspace):
    channel = telegram.make_telegram_channel(workspace)
    menu = telegram.keyboard_message(9, "Pick one", [("Track", "track")])
    menu["chat"]["id"] = "5551234\u0000"

    telegram.post_update(Client(), channel, telegram.callback_query(menu, "track"))

    assert drain().state == "processed"
    assert Message.objects.get().text == "Track"


def test_an_api_body_nested_too_deep_for_json_is_a_400_in_the_api_error_shape(workspace):
    _, token = api_token_create(workspace=workspace, name="fuzz")

    response = token_client(token).post("/api/v1/contacts/", DEEP, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"code": "parse_error", "detail": "JSON parse error - nested too deep."}


@pytest.mark.parametrize("method", ["post", "patch", "delete"])
def test_a_write_to_a_path_the_api_does_not_know_is_a_json_404_not_the_csrf_page(workspace, method):
    _, token = api_token_create(workspace=workspace, name="fuzz")
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token}"})

    response = getattr(client, method)("/api/v1/workspaces/_\u00b7\x1b./", content_type="application/json")

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "No such endpoint."}
