from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.core.crypto import EncryptedJSONBField, EncryptedJSONField, EncryptedTextField

BATCH = 500
ENCRYPTED = EncryptedTextField | EncryptedJSONField | EncryptedJSONBField


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value with the first key of ENCRYPTION_KEYS. Put the new key first, "
        "keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        total = 0
        for model in apps.get_models():
            fields = [f.attname for f in model._meta.fields if isinstance(f, ENCRYPTED)]
            if fields:
                total += self._rotate(model, fields)
        self.stdout.write(f"Re-encrypted {total} row(s).")

    @staticmethod
    def _rotate(model, fields: list[str]) -> int:
        """Reading decrypts with whichever key fits; writing encrypts with the first key. In
        batches by primary key, each in its own transaction, with UPDATEs that touch only the
        encrypted columns."""
        count, last_pk = 0, 0
        manager = model._default_manager
        while True:
            rows = list(manager.filter(pk__gt=last_pk).order_by("pk").values_list("pk", *fields)[:BATCH])
            if not rows:
                return count
            with transaction.atomic():
                for pk, *values in rows:
                    manager.filter(pk=pk).update(**dict(zip(fields, values, strict=True)))
            count += len(rows)
            last_pk = rows[-1][0]
