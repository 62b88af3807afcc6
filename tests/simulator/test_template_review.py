"""The simulated Business Management API for templates: creating one (checked as Meta checks it,
refused with Meta's error body), its review arriving later as the account's signed status
webhook, a pause or a quality change on demand, and deletion. No Django, no database."""

import time

import pytest

from tests.simulator.harness import Receiver, SimulatorProcess, eventually, expected_signature
from tests.simulator.test_simulator import AUTH, SECRET, VERIFY_TOKEN, channel_registration

TEMPLATES_PATH = "/v21.0/WABA1/message_templates"


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
def sim(simulator, receiver):
    client = simulator.client
    client.post("/_simulator/reset", json={"channels": True}).raise_for_status()
    receiver.clear()
    client.post("/_simulator/channels", json=channel_registration(receiver.url)).raise_for_status()
    settings = {"webhook_backoff": 0.05, "template_review_delay": 0.1}
    client.post("/_simulator/settings", json=settings).raise_for_status()
    return client


def autumn(**changes) -> dict:
    template = {
        "name": "autumn_offer",
        "language": "en",
        "category": "MARKETING",
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Autumn at {{1}}", "example": {"header_text": ["Nile"]}},
            {
                "type": "BODY",
                "text": "Hi {{1}}, pumpkins are in: {{2}} this week.",
                "example": {"body_text": [["Amira", "2 for 1"]]},
            },
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop promotions"}]},
        ],
    }
    return {**template, **changes}


def template_changes(receiver) -> list[dict]:
    return [
        {"field": change["field"], **change["value"]}
        for post in receiver.posts()
        for entry in post.json()["entry"]
        for change in entry["changes"]
    ]


def test_a_submitted_template_is_pending_then_approved_by_a_signed_account_webhook(sim, receiver):
    created = sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH)

    assert created.status_code == 200, created.text
    assert created.json()["status"] == "PENDING" and created.json()["category"] == "MARKETING"
    listed = sim.get(TEMPLATES_PATH, params={"name": "autumn_offer"}, headers=AUTH).json()["data"]
    assert [t["status"] for t in listed] == ["PENDING"]
    post = receiver.wait_for_posts(1)[0]
    assert post.headers["x-hub-signature-256"] == expected_signature(SECRET, post.body)
    envelope = post.json()
    assert envelope["object"] == "whatsapp_business_account" and envelope["entry"][0]["id"] == "WABA1"
    change = envelope["entry"][0]["changes"][0]
    assert change["field"] == "message_template_status_update"
    assert change["value"] == {
        "event": "APPROVED",
        "message_template_id": int(created.json()["id"]),
        "message_template_name": "autumn_offer",
        "message_template_language": "en",
        "reason": "NONE",
        "message_template_category": "MARKETING",
    }
    assert sim.get(TEMPLATES_PATH, params={"name": "autumn_offer"}, headers=AUTH).json()["data"][0]["status"] == (
        "APPROVED"
    )


def test_a_review_set_to_reject_sends_the_reason_and_metas_advice(sim, receiver):
    sim.post("/_simulator/settings", json={"template_review": "reject"}).raise_for_status()

    sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH).raise_for_status()

    receiver.wait_for_posts(1)
    (change,) = template_changes(receiver)
    assert (change["event"], change["reason"]) == ("REJECTED", "INVALID_FORMAT")
    assert change["rejection_info"]["recommendation"]
    listed = sim.get(TEMPLATES_PATH, params={"name": "autumn_offer"}, headers=AUTH).json()["data"][0]
    assert (listed["status"], listed["rejected_reason"]) == ("REJECTED", "INVALID_FORMAT")


def test_the_same_name_and_language_again_is_metas_error_100_subcode_2388024(sim):
    sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH).raise_for_status()

    again = sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH)
    other_language = sim.post(TEMPLATES_PATH, json=autumn(language="ar"), headers=AUTH)

    assert again.status_code == 400
    error = again.json()["error"]
    assert (error["code"], error["error_subcode"]) == (100, 2388024)
    assert "already" in error["error_user_msg"] and error["error_user_title"]
    assert other_language.status_code == 200


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "Autumn Offer"}, "lowercase letters, numbers and underscores"),
        ({"name": "a" * 513}, "up to 512 characters"),
        ({"category": "PROMO"}, "category is one of"),
        (
            {"components": [{"type": "BODY", "text": "{{1}}, pumpkins are in.", "example": {"body_text": [["A"]]}}]},
            "start or end",
        ),
        ({"components": [{"type": "BODY", "text": "Hi {{1}}, pumpkins are in."}]}, "sample value"),
        ({"components": [{"type": "FOOTER", "text": "Bye"}]}, "one BODY"),
    ],
)
def test_a_template_meta_would_refuse_is_error_100_with_words_for_its_author(sim, changes, words):
    refused = sim.post(TEMPLATES_PATH, json=autumn(**changes), headers=AUTH)

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == 100
    assert words in refused.json()["error"]["error_user_msg"]
    assert sim.get(TEMPLATES_PATH, params={"name": "autumn_offer"}, headers=AUTH).json()["data"] == []


def test_creating_needs_the_accounts_token(sim):
    refused = sim.post(TEMPLATES_PATH, json=autumn(), headers={"Authorization": "Bearer wrong"})

    assert refused.status_code == 401 and refused.json()["error"]["code"] == 190


def test_a_manual_review_waits_for_the_control_endpoint_then_pauses_and_rates_on_demand(sim, receiver):
    sim.post("/_simulator/settings", json={"template_review": "manual"}).raise_for_status()
    sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH).raise_for_status()
    time.sleep(0.3)
    assert receiver.posts() == []

    review = {"waba_id": "WABA1", "name": "autumn_offer", "language": "en"}
    approved = sim.post("/_simulator/templates/review", json={**review, "event": "APPROVED"})
    paused = sim.post(
        "/_simulator/templates/review",
        json={**review, "event": "PAUSED", "other_info": {"title": "FIRST_PAUSE", "description": "Low quality."}},
    )
    rated = sim.post("/_simulator/templates/quality", json={**review, "quality": "RED"})

    assert [r.json()["parley_statuses"] for r in (approved, paused, rated)] == [[200], [200], [200]]
    changes = template_changes(receiver)
    assert [c.get("event") for c in changes] == ["APPROVED", "PAUSED", None]
    assert changes[1]["other_info"] == {"title": "FIRST_PAUSE", "description": "Low quality."}
    assert changes[2]["field"] == "message_template_quality_update"
    assert (changes[2]["previous_quality_score"], changes[2]["new_quality_score"]) == ("UNKNOWN", "RED")
    assert sim.get(TEMPLATES_PATH, params={"name": "autumn_offer"}, headers=AUTH).json()["data"][0]["status"] == (
        "PAUSED"
    )
    bad = sim.post("/_simulator/templates/review", json={**review, "event": "SMILED"})
    assert bad.status_code == 400 and "event must be one of" in bad.json()["error"]


def test_deleting_one_language_by_its_id_keeps_the_others(sim):
    english = sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH).json()
    sim.post(TEMPLATES_PATH, json=autumn(language="ar"), headers=AUTH).raise_for_status()

    deleted = sim.delete(TEMPLATES_PATH, params={"name": "autumn_offer", "hsm_id": english["id"]}, headers=AUTH)
    again = sim.delete(TEMPLATES_PATH, params={"name": "autumn_offer", "hsm_id": english["id"]}, headers=AUTH)

    assert deleted.json() == {"success": True}
    listed = sim.get(TEMPLATES_PATH, params={"name": "autumn_offer"}, headers=AUTH).json()["data"]
    assert [t["language"] for t in listed] == ["ar"]
    assert again.status_code == 400 and again.json()["error"]["code"] == 100


def test_a_reset_stops_a_review_begun_before_it(sim, receiver):
    sim.post("/_simulator/settings", json={"template_review_delay": 0.5}).raise_for_status()
    sim.post(TEMPLATES_PATH, json=autumn(), headers=AUTH).raise_for_status()

    sim.post("/_simulator/reset", json={}).raise_for_status()
    time.sleep(0.8)

    assert receiver.posts() == []
    eventually(lambda: sim.get("/_simulator/channels").json())  # the number is still registered
