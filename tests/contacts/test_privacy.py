"""Personal data is encrypted at rest: a database dump shows no customer's phone, email or name,
lookups still work through blind indexes, and keys rotate."""

import subprocess
from pathlib import Path

import pgserver
import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from apps.connectors.models import Channel
from apps.contacts.models import Contact
from apps.contacts.selectors import contact_find_by_phone
from apps.contacts.services import contact_resolve, contact_set_email
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_workspace

PG_DUMP = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"


@pytest.fixture
def customer(db):
    channel = make_whatsapp_channel(make_workspace(slug="private"))
    contact = contact_resolve(channel=channel, external_id="201001234567", name="Amira Khalil", phone="+201001234567")
    contact_set_email(contact, "amira.khalil@example.com")
    contact.save()
    return contact


@pytest.mark.django_db(transaction=True)
def test_a_database_dump_shows_no_customer_phone_email_or_name():
    channel = make_whatsapp_channel(make_workspace(slug="dump"))
    contact = contact_resolve(channel=channel, external_id="201001234567", name="Amira Khalil", phone="+201001234567")
    contact_set_email(contact, "amira.khalil@example.com")
    contact.save()
    db = connection.settings_dict
    command = [str(PG_DUMP), "--data-only", "--dbname", db["NAME"], "--username", db["USER"] or "postgres"]
    if db["HOST"]:
        command += ["--host", db["HOST"]]
    if db["PORT"]:
        command += ["--port", str(db["PORT"])]

    dump = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout

    assert "contacts_contact" in dump
    for secret in ("201001234567", "1001234567", "amira.khalil@example.com", "Amira Khalil", "test-app-secret"):
        assert secret not in dump


def test_a_contact_is_found_by_phone_through_its_blind_index(customer):
    found = contact_find_by_phone(workspace=customer.workspace, phone="+20 100 123 4567")

    assert found == customer


def test_phone_numbers_are_stored_in_e164(customer):
    assert Contact.objects.get(pk=customer.pk).phone == "+201001234567"


def test_keys_rotate_and_old_values_stay_readable(customer, settings):
    old_key = settings.ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_encryption_keys", stdout=open("/dev/null", "w"))  # noqa: SIM115

    settings.ENCRYPTION_KEYS = [new_key]  # the old key is gone: everything must read with the new one
    contact = Contact.objects.get(pk=customer.pk)
    assert (contact.name, contact.phone, contact.email) == (
        "Amira Khalil",
        "+201001234567",
        "amira.khalil@example.com",
    )
    assert Channel.objects.get().credentials["app_secret"] == "test-app-secret"


def test_a_value_under_an_unknown_key_fails_loudly(customer, settings):
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(ValueError, match="not configured"):
        Contact.objects.get(pk=customer.pk)
