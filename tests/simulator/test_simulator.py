"""The channel simulator seen from outside: a subprocess on a free port, and a receiver playing
Parley's webhook endpoint. No Django and no database are involved."""

import hashlib
import hmac
import json
import time

import httpx
import pytest

from tests.simulator.harness import Receiver, SimulatorProcess, eventually, expected_signature

PHONE_NUMBER_ID = "1234567890"
TOKEN = "EAAG-simulator-token"
SECRET = "app-secret-for-tests"
VERIFY_TOKEN = "verify-me"
CUSTOMER = "201001234567"
SEND_PATH = f"/v21.0/{PHONE_NUMBER_ID}/messages"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# The suite-wide autouse fixtures in tests/conftest.py need Django settings and Redis; these tests
# exercise a standalone stdlib process, so they opt out by overriding them with no-ops.
@pytest.fixture(autouse=True)
def _fast_passwords():
    pass


@pytest.fixture(autouse=True)
def _clean_cache():
    pass


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver(app_secret=SECRET, verify_token=VERIFY_TOKEN)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    process = SimulatorProcess(log=tmp_path_factory.mktemp("simulator") / "simulator.log")
    yield process
    process.stop()


@pytest.fixture
def sim(simulator, receiver) -> httpx.Client:
    """A clean simulator with one WhatsApp number whose webhook is the receiver; fast timings."""
    client = simulator.client
    client.post("/_simulator/reset", json={"channels": True}).raise_for_status()
    receiver.clear()
    client.post("/_simulator/channels", json=channel_registration(receiver.url)).raise_for_status()
    client.post("/_simulator/settings", json={"status_delay": 0.05, "webhook_backoff": 0.05}).raise_for_status()
    return client


def channel_registration(webhook_url: str) -> dict:
    return {
        "kind": "whatsapp",
        "phone_number_id": PHONE_NUMBER_ID,
        "display_phone_number": "+20 100 000 0001",
        "waba_id": "WABA1",
        "access_token": TOKEN,
        "app_secret": SECRET,
        "verify_token": VERIFY_TOKEN,
        "webhook_url": webhook_url,
        "name": "Nile Basket support",
    }


def customer_writes(sim, **fields) -> dict:
    body = {"phone_number_id": PHONE_NUMBER_ID, "from": "+20 100 123 4567", "name": "Amira", "wait": True}
    answer = sim.post("/_simulator/inbound", json={"type": "text", "text": "hi", **body, **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()


def send(sim, message: dict, headers=AUTH) -> httpx.Response:
    body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER, **message}
    return sim.post(SEND_PATH, json=body, headers=headers)


def text(body: str) -> dict:
    return {"type": "text", "text": {"body": body}}


def buttons(*titles: str) -> dict:
    replies = [{"type": "reply", "reply": {"id": f"b{i}", "title": t}} for i, t in enumerate(titles)]
    return {
        "type": "interactive",
        "interactive": {"type": "button", "body": {"text": "Pick"}, "action": {"buttons": replies}},
    }


ORDER_UPDATE = {
    "type": "template",
    "template": {
        "name": "order_update",
        "language": {"code": "en"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": v} for v in ("Amira", "#1042", "shipped")]}
        ],
    },
}


# Inbound -----------------------------------------------------------------------------------------


def test_customer_text_reaches_parley_as_the_exact_signed_whatsapp_envelope(sim, receiver):
    answer = customer_writes(sim, text="hi / hello 👋")

    [post] = receiver.posts()
    assert answer["status"] == 200
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-hub-signature-256"] == expected_signature(SECRET, post.body)
    assert b"\\/" in post.body and b"\\ud83d\\udc4b" in post.body  # escaped as Meta does
    message = post.json()["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message["id"] == answer["id"] and message["id"].startswith("wamid.")
    assert message["timestamp"].isdigit() and abs(int(message["timestamp"]) - time.time()) < 5
    assert post.json() == {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA1",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "201000000001", "phone_number_id": PHONE_NUMBER_ID},
                            "contacts": [{"profile": {"name": "Amira"}, "wa_id": CUSTOMER}],
                            "messages": [
                                {
                                    "from": CUSTOMER,
                                    "id": answer["id"],
                                    "timestamp": message["timestamp"],
                                    "type": "text",
                                    "text": {"body": "hi / hello 👋"},
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def test_inbound_is_answered_at_once_and_delivered_in_the_background(sim, receiver):
    answer = sim.post(
        "/_simulator/inbound",
        json={"phone_number_id": PHONE_NUMBER_ID, "from": CUSTOMER, "type": "text", "text": "hi"},
    )

    assert answer.status_code == 202
    assert answer.json()["delivered"] is None
    [post] = receiver.wait_for_posts(1)
    assert post.json()["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == answer.json()["id"]


def test_inbound_is_retried_until_parley_answers_2xx(sim, receiver):
    receiver.answer_next(500, 503)

    answer = customer_writes(sim)

    assert (answer["status"], answer["attempts"]) == (200, 3)
    bodies = {post.body for post in receiver.posts()}
    assert len(receiver.posts()) == 3 and len(bodies) == 1


def test_interactive_reply_carries_the_choice_and_the_context_of_parleys_message(sim, receiver):
    customer_writes(
        sim,
        type="interactive",
        reply={"type": "list_reply", "id": "track", "title": "Track order"},
        context={"id": "wamid.PARLEY1"},
    )

    message = receiver.posts()[0].json()["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message["type"] == "interactive"
    assert message["interactive"] == {"type": "list_reply", "list_reply": {"id": "track", "title": "Track order"}}
    assert message["context"] == {"from": "201000000001", "id": "wamid.PARLEY1"}


def test_control_errors_name_the_problem(sim):
    unknown = sim.post("/_simulator/inbound", json={"phone_number_id": "999", "from": CUSTOMER, "text": "hi"})
    no_text = sim.post(
        "/_simulator/inbound", json={"phone_number_id": PHONE_NUMBER_ID, "from": CUSTOMER, "type": "text"}
    )

    assert unknown.status_code == 404 and "999" in unknown.json()["error"]
    assert no_text.status_code == 400 and "text" in no_text.json()["error"]


# Sending -----------------------------------------------------------------------------------------


def test_sending_text_returns_a_wamid_then_sent_and_delivered_status_webhooks(sim, receiver):
    customer_writes(sim)
    receiver.clear()

    answer = send(sim, {**text("Your order is on its way"), "biz_opaque_callback_data": "broadcast-7:recipient-3"})

    assert answer.status_code == 200
    wamid = answer.json()["messages"][0]["id"]
    assert answer.json() == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}],
        "messages": [{"id": wamid}],
    }
    posts = receiver.wait_for_posts(2)
    assert all(p.headers["x-hub-signature-256"] == expected_signature(SECRET, p.body) for p in posts)
    sent, delivered = receiver.statuses()
    assert [sent["status"], delivered["status"]] == ["sent", "delivered"]
    assert sent["id"] == delivered["id"] == wamid
    assert sent["recipient_id"] == CUSTOMER
    assert sent["biz_opaque_callback_data"] == "broadcast-7:recipient-3"
    assert sent["pricing"]["category"] == sent["conversation"]["origin"]["type"] == "service"
    assert "contacts" not in posts[0].json()["entry"][0]["changes"][0]["value"]


def test_a_wrong_or_missing_token_is_refused_with_code_190(sim):
    wrong = send(sim, text("hi"), headers={"Authorization": "Bearer not-the-token"})
    missing = send(sim, text("hi"), headers={})

    for answer in (wrong, missing):
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == 190
        assert answer.json()["error"]["type"] == "OAuthException"


def test_an_unknown_phone_number_id_is_a_graph_error_100(sim):
    answer = sim.post("/v21.0/555000/messages", json={"messaging_product": "whatsapp", **text("hi")}, headers=AUTH)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100


@pytest.mark.parametrize(
    ("message", "code", "problem"),
    [
        (text(""), 100, "text.body"),
        (text("x" * 4097), 131009, "4096"),
        (buttons("One", "Two", "Three", "Four"), 131009, "1 to 3"),
        (buttons("A title far too long for WhatsApp"), 131009, "reply.title"),
        ({"type": "carrier_pigeon", "carrier_pigeon": {}}, 100, "type must be one of"),
        ({"type": "image", "image": {}}, 100, "exactly one of 'id' or 'link'"),
        ({"type": "template", "template": {"name": "order_update"}}, 100, "language.code"),
    ],
)
def test_an_invalid_send_is_refused_naming_the_problem(sim, message, code, problem):
    answer = send(sim, message)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == code
    assert problem in error["error_data"]["details"] and problem in error["message"]


def test_an_injected_rate_limit_fails_the_next_two_sends_then_lets_them_through(sim):
    customer_writes(sim)
    sim.post(
        "/_simulator/faults", json={"phone_number_id": PHONE_NUMBER_ID, "code": 130429, "http_status": 400, "count": 2}
    )

    answers = [send(sim, text(f"try {n}")) for n in range(3)]

    assert [a.status_code for a in answers] == [400, 400, 200]
    error = answers[0].json()["error"]
    assert (error["code"], error["type"]) == (130429, "OAuthException")
    assert error["error_data"]["messaging_product"] == "whatsapp" and error["fbtrace_id"]
    assert [r["http_status"] for r in sim.get("/_simulator/outbox").json()] == [400, 400, 200]


def test_an_async_fault_accepts_the_send_then_reports_it_failed(sim, receiver):
    customer_writes(sim)
    receiver.clear()
    sim.post("/_simulator/faults", json={"phone_number_id": PHONE_NUMBER_ID, "code": 131026, "mode": "async"})

    answer = send(sim, text("hello"))

    assert answer.status_code == 200
    receiver.wait_for_posts(1)
    [failed] = receiver.statuses()
    assert failed["status"] == "failed" and failed["id"] == answer.json()["messages"][0]["id"]
    assert failed["errors"][0]["code"] == 131026
    assert set(failed["errors"][0]) >= {"code", "title", "message", "error_data"}


def test_sending_over_the_throughput_limit_is_error_130429(sim):
    customer_writes(sim)
    sim.post("/_simulator/settings", json={"rate_per_second": 2, "auto_status": "none"})

    answers = [send(sim, text(f"burst {n}")) for n in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 400]
    assert answers[2].json()["error"]["code"] == 130429


def test_a_timeout_fault_holds_the_answer_longer_than_the_client_waits(sim):
    customer_writes(sim)
    sim.post("/_simulator/faults", json={"phone_number_id": PHONE_NUMBER_ID, "mode": "timeout", "delay": 1.0})

    with pytest.raises(httpx.ReadTimeout):
        sim.post(
            SEND_PATH,
            json={"messaging_product": "whatsapp", "to": CUSTOMER, **text("slow")},
            headers=AUTH,
            timeout=0.3,
        )

    [record] = eventually(lambda: sim.get("/_simulator/outbox").json())
    assert record["http_status"] == 200  # the send happened although the caller gave up


def test_a_reset_cuts_off_work_begun_before_it(sim, receiver):
    customer_writes(sim)
    sim.post("/_simulator/settings", json={"status_delay": 0.3})
    send(sim, text("about to be forgotten"))
    receiver.clear()

    sim.post("/_simulator/reset", json={})
    time.sleep(0.7)

    assert receiver.posts() == []
    assert sim.get("/_simulator/outbox").json() == []
    assert [c["phone_number_id"] for c in sim.get("/_simulator/channels").json()] == [PHONE_NUMBER_ID]


@pytest.mark.parametrize("to", ["not-a-number", "201009999999"])
def test_a_send_to_an_undeliverable_number_is_accepted_then_fails_with_131026(sim, receiver, to):
    sim.post("/_simulator/settings", json={"invalid_numbers": ["+20 100 999 9999"]})

    answer = send(sim, {**ORDER_UPDATE, "to": to})

    assert answer.status_code == 200
    receiver.wait_for_posts(1)
    assert receiver.statuses()[0]["errors"][0]["code"] == 131026


# The 24-hour window and templates ----------------------------------------------------------------


def test_free_form_to_a_customer_who_never_wrote_is_accepted_then_fails_with_131047(sim, receiver):
    answer = send(sim, text("Hello there"))

    assert answer.status_code == 200
    receiver.wait_for_posts(1)
    [failed] = receiver.statuses()
    assert failed["status"] == "failed"
    assert failed["errors"][0]["code"] == 131047
    assert failed["errors"][0]["title"] == "Re-engagement message"


def test_free_form_after_the_window_closed_fails_with_131047(sim, receiver):
    customer_writes(sim, timestamp=int(time.time()) - 25 * 3600)
    receiver.clear()

    send(sim, text("Sorry for the delay"))

    receiver.wait_for_posts(1)
    assert receiver.statuses()[0]["errors"][0]["code"] == 131047


def test_a_template_is_delivered_outside_the_window(sim, receiver):
    answer = send(sim, {**ORDER_UPDATE, "biz_opaque_callback_data": "campaign-1"})

    assert answer.status_code == 200
    assert answer.json()["messages"][0]["message_status"] == "accepted"
    receiver.wait_for_posts(2)
    sent, delivered = receiver.statuses()
    assert [sent["status"], delivered["status"]] == ["sent", "delivered"]
    assert sent["pricing"] == {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}
    assert delivered["biz_opaque_callback_data"] == "campaign-1"


def test_a_template_with_the_wrong_number_of_parameters_is_error_132000(sim):
    template = {
        **ORDER_UPDATE["template"],
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Amira"}]}],
    }

    answer = send(sim, {"type": "template", "template": template})

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 132000


def test_templates_are_listed_for_the_business_account(sim):
    answer = sim.get("/v21.0/WABA1/message_templates", headers=AUTH)

    assert answer.status_code == 200
    templates = {t["name"]: t for t in answer.json()["data"]}
    assert {"order_update", "we_miss_you", "back_in_stock"} <= set(templates)
    assert templates["order_update"]["status"] == "APPROVED"
    assert templates["order_update"]["components"][0]["text"] == "Hi {{1}}, your order {{2}} is {{3}}."
    assert {c["type"] for c in templates["back_in_stock"]["components"]} == {"HEADER", "BODY", "BUTTONS"}


# Statuses on demand ------------------------------------------------------------------------------


def test_statuses_can_be_pushed_out_of_order(sim, receiver):
    customer_writes(sim)
    sim.post("/_simulator/settings", json={"auto_status": "none"})
    wamid = send(sim, text("hi")).json()["messages"][0]["id"]
    receiver.clear()

    for status in ("read", "delivered"):
        pushed = sim.post(
            "/_simulator/statuses", json={"phone_number_id": PHONE_NUMBER_ID, "wamid": wamid, "status": status}
        )
        assert pushed.json() == {"id": wamid, "status": 200}

    assert [s["status"] for s in receiver.statuses()] == ["read", "delivered"]
    [record] = sim.get("/_simulator/outbox", params={"to": CUSTOMER}).json()
    assert record["state"] == "read"


# Media -------------------------------------------------------------------------------------------


def test_uploaded_media_can_be_looked_up_and_downloaded_with_the_token(sim):
    content = bytes(range(256)) * 4
    upload = sim.post(
        f"/v21.0/{PHONE_NUMBER_ID}/media",
        data={"messaging_product": "whatsapp", "type": "image/png"},
        files={"file": ("photo.png", content, "image/png")},
        headers=AUTH,
    )
    media_id = upload.json()["id"]

    info = sim.get(f"/v21.0/{media_id}", headers=AUTH).json()
    download = httpx.get(info["url"], headers=AUTH)

    assert info["messaging_product"] == "whatsapp" and info["id"] == media_id
    assert (info["mime_type"], info["file_size"]) == ("image/png", len(content))
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert download.status_code == 200 and download.content == content
    assert httpx.get(info["url"]).status_code == 401


def test_a_customer_photo_arrives_as_a_downloadable_media_id(sim, receiver):
    customer_writes(sim, type="image", caption="Is this the right one?")

    image = receiver.posts()[0].json()["entry"][0]["changes"][0]["value"]["messages"][0]["image"]
    info = sim.get(f"/{image['id']}", headers=AUTH).json()
    download = httpx.get(info["url"], headers=AUTH)

    assert image["caption"] == "Is this the right one?" and image["mime_type"] == "image/png"
    assert download.content.startswith(b"\x89PNG")
    assert hashlib.sha256(download.content).hexdigest() == image["sha256"]


def test_sending_an_unknown_media_id_is_refused(sim):
    answer = send(sim, {"type": "image", "image": {"id": "404404404"}})

    assert answer.status_code == 400 and "404404404" in answer.json()["error"]["error_data"]["details"]


# Handshake, raw posts, page ----------------------------------------------------------------------


def test_the_verify_handshake_echoes_the_challenge_only_for_the_right_token(sim):
    good = sim.post("/_simulator/verify", json={"phone_number_id": PHONE_NUMBER_ID}).json()
    bad = sim.post("/_simulator/verify", json={"phone_number_id": PHONE_NUMBER_ID, "verify_token": "nope"}).json()

    assert (good["status"], good["challenge_ok"]) == (200, True)
    assert (bad["status"], bad["challenge_ok"]) == (403, False)


def test_a_raw_envelope_can_be_posted_three_times_at_once(sim, receiver):
    envelope = {"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": []}]}

    answer = sim.post(
        "/_simulator/inbound/raw",
        json={
            "phone_number_id": PHONE_NUMBER_ID,
            "body": envelope,
            "signature": "good",
            "times": 3,
            "concurrent": True,
        },
    )

    assert answer.json() == {"statuses": [200, 200, 200]}
    posts = receiver.posts()
    assert len(posts) == 3 and len({p.body for p in posts}) == 1
    assert json.loads(posts[0].body) == envelope


def test_a_raw_post_with_a_bad_signature_is_sent_as_is(sim, receiver):
    answer = sim.post(
        "/_simulator/inbound/raw",
        json={"phone_number_id": PHONE_NUMBER_ID, "body": "{not json", "signature": "bad"},
    )

    assert answer.json() == {"statuses": [401]}
    [post] = receiver.posts()
    assert post.body == b"{not json"
    assert not hmac.compare_digest(post.headers["x-hub-signature-256"], expected_signature(SECRET, post.body))


def test_the_thread_shows_both_directions_in_order(sim, receiver):
    customer_writes(sim, text="Where is my order?")
    send(sim, buttons("Track", "Cancel"))

    thread = sim.get(
        "/_simulator/thread", params={"phone_number_id": PHONE_NUMBER_ID, "wa_id": "+20 100 123 4567"}
    ).json()

    assert thread["window_open"] is True
    asked, answered = thread["messages"]
    assert (asked["direction"], asked["preview"]["text"], asked["parley_status"]) == ("in", "Where is my order?", 200)
    assert answered["direction"] == "out"
    assert [r["title"] for r in answered["preview"]["replies"]] == ["Track", "Cancel"]


def test_every_graph_request_is_logged(sim):
    send(sim, text("logged"), headers={"Authorization": "Bearer wrong"})

    [logged] = sim.get("/_simulator/requests").json()
    assert (logged["method"], logged["path"], logged["status"]) == ("POST", SEND_PATH, 401)
    assert logged["body"]["text"] == {"body": "logged"}
    assert logged["headers"]["authorization"] == "Bearer wrong"


def test_the_customer_page_is_served(sim):
    page = sim.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/_simulator/thread" in page.text and "<script" in page.text


def test_channels_can_be_loaded_from_a_file_at_start(tmp_path, receiver):
    channels = tmp_path / "channels.json"
    channels.write_text(json.dumps([channel_registration(receiver.url)]))

    process = SimulatorProcess("--channels", str(channels), log=tmp_path / "simulator.log")
    try:
        listed = process.client.get("/_simulator/channels").json()
    finally:
        process.stop()

    assert [c["phone_number_id"] for c in listed] == [PHONE_NUMBER_ID]
