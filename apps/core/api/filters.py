"""Filters shared by the API's lists."""

from datetime import UTC

from django import forms
from django_filters import IsoDateTimeFilter
from django_filters.fields import IsoDateTimeField


class _UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 moment, handed to PostgreSQL in UTC: Python accepts offsets up to ±23:59,
    PostgreSQL only ±15:59, so `…-20:28` would otherwise be a database error, not a 400."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except (OverflowError, ValueError) as error:
            raise forms.ValidationError("Enter a date and time PostgreSQL can store.", code="invalid") from error


class MomentFilter(IsoDateTimeFilter):
    field_class = _UtcIsoDateTimeField
