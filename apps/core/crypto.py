"""Encryption of personal data at rest, and blind indexes to look it up.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) through MultiFernet: the first key
of ENCRYPTION_KEYS encrypts, every key decrypts, so keys rotate by putting a new key first and
running `manage.py rotate_encryption_keys`. A value that must be found by equality (a phone, an
email) also gets a blind index: an HMAC-SHA256 of its normalised form under BLIND_INDEX_KEY,
stored in an indexed column, so "find the contact with this phone" stays one index lookup
while a database dump shows neither.
"""

import hashlib
import hmac
import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise ValueError("Cannot decrypt: the value was encrypted with a key that is not configured") from error


def blind_index(value: str) -> str:
    if not value:
        return ""
    return hmac.new(settings.BLIND_INDEX_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


class EncryptedTextField(models.TextField):
    """Text stored encrypted; it cannot be filtered on (use a blind index for that)."""

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value


class EncryptedJSONField(models.TextField):
    """A JSON object stored encrypted, for credentials and secrets."""

    def from_db_value(self, value, expression, connection):
        return json.loads(decrypt(value)) if value else {}

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        return json.loads(value) if value else {}

    def get_prep_value(self, value):
        return encrypt(json.dumps(value or {}))

    def value_to_string(self, obj):
        return json.dumps(self.value_from_object(obj))


class EncryptedJSONBField(models.JSONField):
    """Any JSON value (an outgoing webhook's body) stored encrypted, as one JSON string in a jsonb
    column: the admin and serializers still show JSON, and nothing inside can be filtered on."""

    def get_prep_value(self, value):
        return encrypt(json.dumps(value, cls=self.encoder))

    def from_db_value(self, value, expression, connection):
        stored = super().from_db_value(value, expression, connection)
        # A row the encrypting migration has not reached yet still holds the JSON itself.
        return json.loads(decrypt(stored), cls=self.decoder) if isinstance(stored, str) else stored
