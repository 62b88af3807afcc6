"""Filters shared by the API's lists."""

from datetime import UTC

from django import forms
from django_filters import IsoDateTimeFilter, NumberFilter
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


class IdFilter(NumberFilter):
    """A row's id: a whole number PostgreSQL's bigint holds (`tag=1.5` or `tag=6e16` is a 400,
    not a database error)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)
