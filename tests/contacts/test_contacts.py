import pytest

from apps.contacts.models import Contact, ContactIdentity, Tag
from apps.contacts.selectors import contact_merge_suggestions
from apps.contacts.services import contact_merge, contact_resolve, normalise_phone
from apps.conversations.models import Conversation, Message
from apps.core.exceptions import DomainError
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace


@pytest.fixture
def workspace(db):
    return make_workspace(slug="crm")


def test_a_known_identity_returns_its_contact(workspace):
    channel = make_whatsapp_channel(workspace)
    first = contact_resolve(channel=channel, external_id="201001234567", name="Amira", phone="+201001234567")

    again = contact_resolve(channel=channel, external_id="201001234567", name="Someone else")

    assert again == first
    assert Contact.objects.count() == 1


def test_a_bad_phone_does_not_stop_recognition(workspace):
    channel = make_whatsapp_channel(workspace)

    contact = contact_resolve(channel=channel, external_id="visitor-1", phone="not a phone")

    assert contact.phone == ""


@pytest.mark.parametrize("raw", ["abc", "+1", ""])
def test_impossible_phones_are_refused_with_a_clear_error(raw):
    with pytest.raises(DomainError) as error:
        normalise_phone(raw)
    assert error.value.code == "invalid_phone"


def test_contacts_sharing_a_phone_are_suggested_for_merge(workspace):
    a = Contact.objects.create(workspace=workspace, name="Amira")
    b = Contact.objects.create(workspace=workspace, name="A. K.")
    from apps.contacts.services import contact_set_phone

    for contact in (a, b):
        contact_set_phone(contact, "+201001234567")
        contact.save()

    assert contact_merge_suggestions(workspace=workspace) == [[a, b]]


def test_merge_moves_identities_conversations_messages_and_tags(workspace):
    whatsapp = make_whatsapp_channel(workspace)
    other = make_whatsapp_channel(workspace)
    survivor = contact_resolve(channel=whatsapp, external_id="201001234567", name="Amira")
    duplicate = contact_resolve(channel=other, external_id="visitor-9", email="amira@example.com")
    duplicate.custom_fields = {"vip": True}
    duplicate.save()
    tag = Tag.objects.create(workspace=workspace, name="waiting:sku-1")
    duplicate.tags.add(tag)
    kept = Conversation.objects.create(workspace=workspace, contact=survivor, channel=whatsapp)
    moved = Conversation.objects.create(workspace=workspace, contact=duplicate, channel=other)
    same_channel = Conversation.objects.create(
        workspace=workspace,
        contact=duplicate,
        channel=make_whatsapp_channel(workspace),
    )
    Message.objects.create(
        workspace=workspace,
        conversation=moved,
        channel=other,
        direction="in",
        sender_kind="contact",
        text="hi",
        state="received",
    )

    merged = contact_merge(survivor=survivor, duplicate=duplicate)

    assert set(ContactIdentity.objects.values_list("contact_id", flat=True)) == {survivor.id}
    assert set(Conversation.objects.values_list("contact_id", flat=True)) == {survivor.id}
    assert {kept.id, moved.id, same_channel.id} == set(Conversation.objects.values_list("id", flat=True))
    assert list(merged.tags.all()) == [tag]
    assert merged.email == "amira@example.com"
    assert merged.custom_fields == {"vip": True}
    assert Contact.objects.get(pk=duplicate.pk).merged_into_id == survivor.id
    # A message to the duplicate's old identity now reaches the survivor.
    assert contact_resolve(channel=other, external_id="visitor-9") == survivor


def test_merging_into_itself_or_across_workspaces_is_refused(workspace):
    a = Contact.objects.create(workspace=workspace)
    b = Contact.objects.create(workspace=make_workspace(slug="other"))

    with pytest.raises(DomainError):
        contact_merge(survivor=a, duplicate=a)
    with pytest.raises(DomainError):
        contact_merge(survivor=a, duplicate=b)


def test_a_supervisor_merges_duplicates_from_the_admin(tenants):
    from tests.conftest import client_for

    a = Contact.objects.create(workspace=tenants.a, name="Amira")
    b = Contact.objects.create(workspace=tenants.a, name="")
    stranger = Contact.objects.create(workspace=tenants.b, name="Not yours")

    response = client_for(tenants.supervisor).post(
        "/admin/contacts/contact/",
        {"action": "merge_into_oldest", "_selected_action": [a.pk, b.pk, stranger.pk]},
    )

    assert response.status_code == 302
    assert Contact.objects.get(pk=b.pk).merged_into_id == a.pk
    assert Contact.objects.get(pk=stranger.pk).merged_into_id is None
