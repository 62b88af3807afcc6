"""The export's rows as JSON: the same columns, names and values as the CSV (docs/reports.md),
with null for an empty cell and ISO 8601 UTC moments."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.analytics.export import BOOL, COLUMNS, INT, MOMENT, iso


@extend_schema_field(OpenApiTypes.DATETIME)
class MomentField(serializers.Field):
    """A moment as the CSV writes it: ISO 8601 in UTC to the second (2026-11-30T14:05:09Z)."""

    def to_representation(self, value) -> str | None:
        return iso(value)


_FIELD_FOR = {
    INT: lambda: serializers.IntegerField(allow_null=True),
    BOOL: lambda: serializers.BooleanField(),
    MOMENT: lambda: MomentField(allow_null=True),
}


def _field(kind: str) -> serializers.Field:
    maker = _FIELD_FOR.get(kind, lambda: serializers.CharField(allow_blank=True))
    field = maker()
    field.read_only = True
    return field


# One field per export column, declared from COLUMNS so that the schema and the CSV cannot drift apart.
ConversationRowSerializer = type(
    "ConversationRowSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "One conversation cycle: a row of the export (docs/reports.md defines each column).",
        "__module__": __name__,
        **{name: _field(kind) for name, kind in COLUMNS},
    },
)
