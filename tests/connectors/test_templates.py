"""WhatsApp message templates: synced from the provider (the channel simulator's Graph API, over
HTTP, every page), kept as drafts a supervisor writes, previewed with the examples and with a
contact's own fields, and sent with header, body and button parameters in Meta's exact shape."""

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client

from apps.connectors.base import ErrorClass, OutboundMessage, ProviderError
from apps.connectors.models import Channel, MessageTemplate
from apps.connectors.registry import connector_for
from apps.connectors.selectors import template_values_for_contact
from apps.connectors.services import template_draft_copy, templates_sync
from apps.contacts.services import contact_resolve
from apps.conversations.models import DeliveryState
from apps.conversations.services import conversation_for_outbound, message_deliver, message_send
from apps.core.exceptions import DomainError
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel

pytestmark = pytest.mark.django_db

WA_ID = "201001234567"
STOCK = {
    ("order_update", "en"),
    ("order_update", "ar"),
    ("we_miss_you", "en"),
    ("back_in_stock", "en"),
    ("delivery_window", "en"),
    ("spring_sale", "en"),
    ("login_code", "en"),
    ("loyalty_points", "en"),
    ("flash_deal", "en"),
    ("winter_clearance", "en"),
}


@pytest.fixture
def channel(tenants, simulator):
    channel = make_whatsapp_channel(tenants.a, base_url=simulator.url)
    simulator.register(channel)
    return channel


@pytest.fixture
def synced(channel):
    templates_sync(channel=channel)
    return {t.name if t.language == "en" else f"{t.name}:{t.language}": t for t in channel.templates.all()}


def template_calls(simulator) -> list[dict]:
    return [r for r in simulator.get("/_simulator/requests") if r["path"].endswith("/message_templates")]


def put_template(simulator, **template):
    simulator.post("/_simulator/templates", {"waba_id": "WABA1", "template": template})


# Sync ----------------------------------------------------------------------------------------


def test_a_sync_reads_every_page_of_the_business_accounts_templates(channel, simulator):
    simulator.post("/_simulator/settings", {"templates_page_size": 3})

    counts = templates_sync(channel=channel)

    assert counts == {"created": 10, "updated": 0, "removed": 0}
    assert {(t.name, t.language) for t in channel.templates.all()} == STOCK
    calls = template_calls(simulator)
    assert len(calls) == 4  # 3 + 3 + 3 + 1
    assert calls[0]["headers"]["authorization"] == "Bearer test-token"
    assert "after" not in calls[0]["query"] and all(call["query"]["after"] for call in calls[1:])
    assert channel.templates.filter(synced_at__isnull=True).count() == 0


def test_statuses_and_categories_are_mapped_to_parleys(synced):
    statuses = {name: t.status for name, t in synced.items()}

    assert statuses["order_update"] == statuses["spring_sale"] == MessageTemplate.Status.APPROVED
    assert statuses["loyalty_points"] == MessageTemplate.Status.PENDING
    assert statuses["flash_deal"] == MessageTemplate.Status.REJECTED
    assert synced["flash_deal"].rejected_reason == "INVALID_FORMAT"
    assert synced["order_update"].rejected_reason == ""
    assert statuses["winter_clearance"] == MessageTemplate.Status.PAUSED
    assert synced["login_code"].category == MessageTemplate.Category.AUTHENTICATION
    assert synced["order_update"].category == MessageTemplate.Category.UTILITY
    assert synced["we_miss_you"].category == MessageTemplate.Category.MARKETING
    assert synced["order_update"].provider_id == "1100000000000001"


def test_a_synced_template_keeps_its_header_footer_buttons_and_examples(synced):
    window, sale = synced["delivery_window"], synced["spring_sale"]

    assert (window.header_format, window.header) == ("text", "Order {{1}}")
    assert window.footer == "Nile Basket deliveries"
    assert window.buttons == [
        {"type": "url", "text": "Track my order", "url": "https://shop.example.com/track/{{1}}"},
        {"type": "phone_number", "text": "Call the courier", "phone_number": "+201001230000"},
    ]
    assert [v.label for v in window.variables] == [
        "header {{1}}",
        "body {{1}}",
        "body {{2}}",
        "body {{3}}",
        "button 1 {{1}}",
    ]
    assert window.example == ["#1042", "Amira", "14:00", "16:00", "1042"]  # the button's: only what replaces {{1}}
    assert sale.parameter_format == "named"
    assert [v.slot for v in sale.variables] == ["season", "first_name", "discount", "code", "button.0"]
    assert sale.example == ["spring", "Amira", "20%", "SPRING20", "spring"]
    assert synced["winter_clearance"].header_format == "image"
    assert synced["winter_clearance"].header == "https://example.com/sample/sale.png"
    assert synced["login_code"].buttons == [{"type": "otp", "text": "Copy code", "otp_type": "COPY_CODE"}]


def test_syncing_again_changes_nothing_but_the_time_it_was_seen(channel, synced):
    before = {t.pk: (t.status, t.body, t.buttons, t.example, t.synced_at) for t in channel.templates.all()}

    counts = templates_sync(channel=channel)

    assert counts == {"created": 0, "updated": 0, "removed": 0}
    after = {t.pk: (t.status, t.body, t.buttons, t.example, t.synced_at) for t in channel.templates.all()}
    assert set(after) == set(before)
    assert all(after[pk][:4] == before[pk][:4] and after[pk][4] > before[pk][4] for pk in before)


def test_an_approval_at_the_provider_reaches_the_template(channel, synced, simulator):
    put_template(
        simulator,
        name="loyalty_points",
        language="en",
        status="APPROVED",
        category="MARKETING",
        components=[
            {"type": "BODY", "text": "Hi {{1}}, you have {{2}} points.", "example": {"body_text": [["A", "5"]]}}
        ],
    )

    counts = templates_sync(channel=channel)

    assert counts == {"created": 0, "updated": 1, "removed": 0}
    loyalty = channel.templates.get(name="loyalty_points")
    assert loyalty.status == MessageTemplate.Status.APPROVED
    assert loyalty.body == "Hi {{1}}, you have {{2}} points." and loyalty.example == ["A", "5"]
    assert loyalty.provider_id == "1100000000000007"  # the same template, reviewed


def test_a_template_deleted_at_the_provider_is_paused_and_kept_until_it_returns(channel, synced, simulator):
    simulator.post("/_simulator/templates/delete", {"waba_id": "WABA1", "name": "we_miss_you"})

    first, second = templates_sync(channel=channel), templates_sync(channel=channel)

    gone = channel.templates.get(name="we_miss_you")
    assert first == {"created": 0, "updated": 0, "removed": 1}
    assert second == {"created": 0, "updated": 0, "removed": 0}
    assert gone.status == MessageTemplate.Status.PAUSED and gone.provider_id == ""
    assert "No longer at the provider" in gone.rejected_reason
    put_template(
        simulator,
        name="we_miss_you",
        language="en",
        category="MARKETING",
        components=[{"type": "BODY", "text": "Hi {{1}}, we miss you!", "example": {"body_text": [["Amira"]]}}],
    )
    assert templates_sync(channel=channel) == {"created": 0, "updated": 1, "removed": 0}
    gone.refresh_from_db()
    assert gone.status == MessageTemplate.Status.APPROVED and gone.rejected_reason == ""


def test_drafts_are_left_alone_unless_the_provider_now_has_them(channel, simulator):
    def draft(name):
        return MessageTemplate.objects.create(
            workspace=channel.workspace, channel=channel, name=name, body="Hi {{1}}", example=["A"], status="draft"
        )

    unsent, submitted = draft("autumn_offer"), draft("loyalty_points")

    counts = templates_sync(channel=channel)

    unsent.refresh_from_db()
    submitted.refresh_from_db()
    assert counts == {"created": 9, "updated": 1, "removed": 0}
    assert unsent.status == MessageTemplate.Status.DRAFT
    assert submitted.status == MessageTemplate.Status.PENDING and submitted.provider_id == "1100000000000007"


def test_a_channel_that_cannot_be_synced_says_why(tenants, simulator):
    no_account = make_whatsapp_channel(tenants.a, base_url=simulator.url)
    no_account.credentials.pop("waba_id")
    no_account.save(update_fields=["credentials"])
    bot = Channel.objects.create(workspace=tenants.a, kind="telegram", name="Bot", credentials={"bot_token": "1:x"})

    with pytest.raises(DomainError) as missing:
        templates_sync(channel=no_account)
    with pytest.raises(DomainError) as unsupported:
        templates_sync(channel=bot)

    assert missing.value.code == "waba_id_missing"
    assert unsupported.value.code == "templates_unsupported"


def test_a_token_the_provider_refuses_is_a_credentials_error(channel):
    channel.credentials["access_token"] = "not-the-token"
    channel.save(update_fields=["credentials"])

    with pytest.raises(ProviderError) as refused:
        templates_sync(channel=channel)

    assert refused.value.code == "190" and refused.value.error_class == ErrorClass.CREDENTIALS
    assert not channel.templates.exists()


def test_the_template_list_pages_with_a_limit_and_an_after_cursor(channel, simulator):
    url = f"{simulator.url}/v21.0/WABA1/message_templates"
    auth = {"Authorization": "Bearer test-token"}

    first = httpx.get(url, params={"limit": 4, "fields": "name,status"}, headers=auth).json()
    second = httpx.get(first["paging"]["next"], headers=auth).json()
    last = httpx.get(url, params={"limit": 4, "after": second["paging"]["cursors"]["after"]}, headers=auth).json()
    bad = httpx.get(url, params={"after": "nonsense"}, headers=auth)

    assert [len(page["data"]) for page in (first, second, last)] == [4, 4, 2]
    assert set(first["data"][0]) == {"id", "name", "status"}
    assert "next" not in last["paging"] and "previous" in last["paging"]
    names = [t["name"] for page in (first, second, last) for t in page["data"]]
    assert len(names) == 10 and {t for t, _ in STOCK} == set(names)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 100


def test_the_management_command_syncs_a_channel(channel, capsys):
    call_command("sync_templates", channel=[channel.pk])

    assert "10 new, 0 updated, 0 removed" in capsys.readouterr().out
    assert channel.templates.count() == 10


# Rendering ----------------------------------------------------------------------------------


def make_template(channel, **fields):
    return MessageTemplate(workspace=channel.workspace, channel=channel, **{"name": "t", **fields})


def test_a_positional_template_renders_its_header_body_footer_and_buttons(tenants):
    template = make_template(
        make_whatsapp_channel(tenants.a),
        header_format="text",
        header="Order {{1}}",
        body="Hi {{1}}, your courier comes at {{2}}.",
        footer="Nile Basket",
        buttons=[
            {"type": "url", "text": "Track", "url": "https://shop.example.com/t/{{1}}"},
            {"type": "quick_reply", "text": "Thanks"},
        ],
        example=["#1", "Amira", "14:00", "1"],
    )

    shown = template.rendered(["#1042", "Youssef", "16:00", "1042"])

    assert shown["header"] == "Order #1042"
    assert shown["body"] == "Hi Youssef, your courier comes at 16:00."
    assert shown["buttons"][0] == {"type": "url", "text": "Track", "url": "https://shop.example.com/t/1042"}
    assert template.render(["#1042", "Youssef", "16:00", "1042"]) == (
        "Order #1042\n\nHi Youssef, your courier comes at 16:00.\n\nNile Basket"
    )
    assert template.rendered()["body"] == "Hi Amira, your courier comes at 14:00."  # the examples
    assert template.render(["#1042"]) == "Order #1042\n\nHi {{1}}, your courier comes at {{2}}.\n\nNile Basket"


def test_a_named_template_renders_from_a_list_or_by_name(tenants):
    template = make_template(
        make_whatsapp_channel(tenants.a),
        parameter_format="named",
        header_format="text",
        header="Hello {{first_name}}",
        body="{{first_name}}, take {{discount}} off.",
    )

    assert [v.slot for v in template.variables] == ["first_name", "discount"]  # one value, header and body
    assert template.render(["Amira", "20%"]) == "Hello Amira\n\nAmira, take 20% off."
    assert template.render({"discount": "10%", "first_name": "Omar"}) == "Hello Omar\n\nOmar, take 10% off."


def test_a_body_only_template_still_counts_and_renders_as_before(tenants):
    template = make_template(make_whatsapp_channel(tenants.a), body="Hi {{1}}, your order {{2}} is {{3}}.")

    assert template.variable_count == 3
    assert template.render(["Amira", "#1001", "on its way"]) == "Hi Amira, your order #1001 is on its way."


def test_a_contacts_fields_fill_named_variables_and_a_mapping_fills_positional_ones(synced, channel):
    contact = contact_resolve(channel=channel, external_id=WA_ID, name="Youssef Adel", phone=f"+{WA_ID}")

    named = template_values_for_contact(template=synced["spring_sale"], contact=contact)
    positional = template_values_for_contact(
        template=synced["delivery_window"], contact=contact, mapping=[{}, {"field": "contact.first_name"}]
    )

    assert named == ["spring", "Youssef", "20%", "SPRING20", "spring"]
    assert positional == ["#1042", "Youssef", "14:00", "16:00", "1042"]


def test_a_drafts_variables_and_examples_are_checked(tenants):
    template = make_template(
        make_whatsapp_channel(tenants.a),
        name="Spring Sale",
        header_format="text",
        header="{{1}} and {{2}}",
        body="Hi {{first_name}}",
        footer="Bye {{1}}",
        buttons=[{"type": "url", "text": "Go", "url": "http://insecure"}],
    )

    with pytest.raises(ValidationError) as invalid:
        template.full_clean(exclude=["workspace"])

    errors = invalid.value.message_dict
    assert set(errors) == {"name", "header", "body", "footer", "buttons"}
    fixed = make_template(
        make_whatsapp_channel(tenants.a), name="spring_sale", body="Hi {{1}}, {{2}} off", example=["Amira"]
    )
    with pytest.raises(ValidationError) as no_examples:
        fixed.full_clean(exclude=["workspace"])
    assert "body {{1}}, body {{2}}" in no_examples.value.message_dict["example"][0]


# Sending ------------------------------------------------------------------------------------


def send_and_deliver(channel, template, parameters):
    contact = contact_resolve(channel=channel, external_id=WA_ID, name="Youssef Adel", phone=f"+{WA_ID}")
    conversation = conversation_for_outbound(contact=contact, channel=channel)
    message = message_send(
        conversation=conversation,
        kind="template",
        payload={"template_id": template.pk, "parameters": parameters},
        sender_kind="system",
    )
    message_deliver(message_id=message.id)
    message.refresh_from_db()
    return message


def test_a_template_with_header_body_and_button_parameters_leaves_in_metas_exact_shape(channel, synced, simulator):
    message = send_and_deliver(channel, synced["delivery_window"], ["#1042", "Youssef", "14:00", "16:00", "1042"])

    assert message.state == DeliveryState.SENT, message.error
    assert message.text == "Order #1042\n\nHi Youssef, your courier arrives between 14:00 and 16:00 today.\n\n" + (
        "Nile Basket deliveries"
    )
    [sent] = simulator.get("/_simulator/outbox", phone_number_id="1000001")
    assert sent["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "template",
        "template": {
            "name": "delivery_window",
            "language": {"code": "en"},
            "components": [
                {"type": "header", "parameters": [{"type": "text", "text": "#1042"}]},
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Youssef"},
                        {"type": "text", "text": "14:00"},
                        {"type": "text", "text": "16:00"},
                    ],
                },
                {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "1042"}]},
            ],
        },
    }
    assert sent["category"] == "utility"


def test_a_named_template_sends_each_parameter_with_its_name(channel, synced, simulator):
    message = send_and_deliver(channel, synced["spring_sale"], ["spring", "Youssef", "20%", "SPRING20", "spring"])

    assert message.state == DeliveryState.SENT, message.error
    [sent] = simulator.get("/_simulator/outbox", phone_number_id="1000001")
    assert sent["body"]["template"]["components"] == [
        {"type": "header", "parameters": [{"type": "text", "text": "spring", "parameter_name": "season"}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Youssef", "parameter_name": "first_name"},
                {"type": "text", "text": "20%", "parameter_name": "discount"},
                {"type": "text", "text": "SPRING20", "parameter_name": "code"},
            ],
        },
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "spring"}]},
    ]
    thread = simulator.get("/_simulator/thread", phone_number_id="1000001", wa_id=WA_ID)
    assert thread["messages"][-1]["preview"]["header"] == "The spring sale is on"
    assert thread["messages"][-1]["preview"]["text"] == "Hi Youssef, take 20% off everything with code SPRING20."


def test_an_authentication_templates_code_goes_in_its_copy_code_button_too(channel, synced, simulator):
    message = send_and_deliver(channel, synced["login_code"], ["482910"])

    assert message.state == DeliveryState.SENT, message.error
    [sent] = simulator.get("/_simulator/outbox", phone_number_id="1000001")
    assert sent["body"]["template"]["components"][-1] == {
        "type": "button",
        "sub_type": "url",
        "index": "0",
        "parameters": [{"type": "text", "text": "482910"}],
    }


@pytest.mark.parametrize(
    ("name", "code"),
    [("winter_clearance", "132015"), ("loyalty_points", "132001"), ("flash_deal", "132001")],
)
def test_the_provider_refuses_a_template_that_is_not_approved(channel, synced, name, code):
    connector = connector_for(channel)
    template = synced[name]
    built = connector.template_payload(template, template.example)

    with pytest.raises(ProviderError) as refused:
        connector.send(channel, OutboundMessage(recipient_id=WA_ID, kind="template", payload={"template": built}))

    assert refused.value.code == code and refused.value.error_class == ErrorClass.FIX_TEMPLATE


def test_the_provider_refuses_missing_button_or_unnamed_parameters(channel, synced):
    connector = connector_for(channel)
    window = connector.template_payload(synced["delivery_window"], synced["delivery_window"].example)
    window["components"] = window["components"][:-1]  # no value for the URL button
    sale = connector.template_payload(synced["spring_sale"], synced["spring_sale"].example)
    for component in sale["components"]:
        for parameter in component["parameters"]:
            parameter.pop("parameter_name", None)

    codes = []
    for built in (window, sale):
        with pytest.raises(ProviderError) as refused:
            connector.send(channel, OutboundMessage(recipient_id=WA_ID, kind="template", payload={"template": built}))
        codes.append(refused.value.code)

    assert codes == ["132000", "132012"]


# Admin --------------------------------------------------------------------------------------


def test_a_supervisor_syncs_a_channels_templates_from_the_channel_admin(tenants, channel):
    response = client_for(tenants.supervisor).post(
        "/admin/connectors/channel/",
        {"action": "sync_templates", "_selected_action": [channel.pk]},
        follow=True,
    )

    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any("10 new, 0 updated, 0 no longer at the provider" in m for m in shown), shown
    assert channel.templates.count() == 10


def test_a_supervisor_syncs_from_the_template_list(tenants, channel):
    client = client_for(tenants.supervisor)

    page = client.get("/admin/connectors/messagetemplate/sync/")
    synced = client.post("/admin/connectors/messagetemplate/sync/", {"channel": channel.pk}, follow=True)

    assert page.status_code == 200 and channel.name in page.content.decode()
    assert synced.redirect_chain[-1][0] == "/admin/connectors/messagetemplate/"
    assert channel.templates.count() == 10
    listed = client.get("/admin/connectors/messagetemplate/")
    assert "Sync from the provider" in listed.content.decode()


def test_a_supervisor_previews_a_template_with_its_examples_and_a_sample_contact(tenants, channel, synced):
    contact_resolve(channel=channel, external_id=WA_ID, name="Youssef Adel", phone=f"+{WA_ID}")
    client = client_for(tenants.supervisor)
    sale, window = synced["spring_sale"], synced["delivery_window"]

    change = client.get(f"/admin/connectors/messagetemplate/{sale.pk}/change/").content.decode()
    mapped = client.get(
        f"/admin/connectors/messagetemplate/{window.pk}/preview/", {"v1": "contact.first_name", "v4": ""}
    ).content.decode()

    assert "Hi Amira, take 20% off everything with code SPRING20." in change  # the examples
    assert "Hi Youssef, take 20% off everything with code SPRING20." in change  # the contact's first name
    assert "The spring sale is on" in change and "Reply STOP to opt out" in change
    assert "https://shop.example.com/sale/spring" in change
    assert "Hi Youssef, your courier arrives between 14:00 and 16:00 today." in mapped
    assert "https://shop.example.com/track/1042" in mapped and "+201001230000" in mapped


def test_synced_templates_are_read_only_and_new_ones_are_drafts(tenants, channel, synced):
    client = client_for(tenants.supervisor)
    order_update = synced["order_update"]

    edit = client.post(
        f"/admin/connectors/messagetemplate/{order_update.pk}/change/",
        {"channel": channel.pk, "name": "order_update", "language": "en", "body": "Changed {{1}}"},
    )
    added = client.post(
        "/admin/connectors/messagetemplate/add/",
        {
            "channel": channel.pk,
            "name": "autumn_offer",
            "language": "en",
            "category": "marketing",
            "parameter_format": "named",
            "header_format": "text",
            "header": "Autumn at Nile Basket",
            "body": "Hi {{first_name}}, pumpkins are in: {{offer}}.",
            "footer": "Reply STOP to opt out",
            "buttons": '[{"type": "quick_reply", "text": "Stop promotions"}]',
            "example": '["Amira", "2 for 1"]',
        },
    )

    assert edit.status_code == 403
    order_update.refresh_from_db()
    assert order_update.body == "Hi {{1}}, your order {{2}} is {{3}}."
    assert added.status_code == 302, added.context["adminform"].form.errors
    draft = MessageTemplate.objects.get(name="autumn_offer")
    assert (draft.status, draft.workspace_id) == (MessageTemplate.Status.DRAFT, tenants.a.pk)
    assert (
        draft.render(draft.example)
        == "Autumn at Nile Basket\n\nHi Amira, pumpkins are in: 2 for 1.\n\nReply STOP to opt out"
    )


def test_a_draft_with_a_bad_variable_is_refused_with_the_reason(tenants, channel):
    response = client_for(tenants.supervisor).post(
        "/admin/connectors/messagetemplate/add/",
        {
            "channel": channel.pk,
            "name": "autumn_offer",
            "language": "en",
            "category": "marketing",
            "parameter_format": "positional",
            "body": "Hi {{first_name}}",
            "buttons": "[]",
            "example": '["Amira"]',
        },
    )

    assert response.status_code == 200
    assert "Positional variables are numbers" in str(response.context["adminform"].form.errors["body"])
    assert not MessageTemplate.objects.filter(name="autumn_offer").exists()


def test_an_approved_template_is_copied_to_a_draft_to_change_it(tenants, channel, synced):
    response = client_for(tenants.supervisor).post(
        "/admin/connectors/messagetemplate/",
        {"action": "copy_as_draft", "_selected_action": [synced["we_miss_you"].pk]},
        follow=True,
    )
    again = template_draft_copy(template=synced["we_miss_you"])

    copy = MessageTemplate.objects.get(name="we_miss_you_v2")
    assert response.status_code == 200
    assert copy.status == MessageTemplate.Status.DRAFT and copy.provider_id == ""
    assert (copy.body, copy.buttons, copy.footer) == (
        synced["we_miss_you"].body,
        synced["we_miss_you"].buttons,
        synced["we_miss_you"].footer,
    )
    assert again.name == "we_miss_you_v3"


def test_another_workspaces_template_and_channel_are_not_found(tenants, channel, synced):
    theirs = make_whatsapp_channel(tenants.b)
    hidden = MessageTemplate.objects.create(workspace=tenants.b, channel=theirs, name="secret", body="Hi {{1}}")
    client = client_for(tenants.supervisor)

    change = client.get(f"/admin/connectors/messagetemplate/{hidden.pk}/change/")
    preview = client.get(f"/admin/connectors/messagetemplate/{hidden.pk}/preview/")
    sync = client.post("/admin/connectors/messagetemplate/sync/", {"channel": theirs.pk})
    listed = client.get("/admin/connectors/messagetemplate/sync/").content.decode()
    mine = client.get(f"/admin/connectors/messagetemplate/{synced['order_update'].pk}/preview/")

    assert (change.status_code, preview.status_code, sync.status_code) == (404, 404, 404)
    assert f'value="{theirs.pk}"' not in listed
    assert mine.status_code == 200


def test_an_agent_cannot_reach_the_template_admin(tenants, synced):
    response = client_for(tenants.teammate).get(
        f"/admin/connectors/messagetemplate/{synced['order_update'].pk}/preview/"
    )

    assert response.status_code == 302  # to the admin's login
    assert Client().get("/admin/connectors/messagetemplate/sync/").status_code == 302
