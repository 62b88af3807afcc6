"""One JSON error shape for the whole API: {"code": ..., "detail": ..., "fields"?: {...}}."""

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.exceptions import DomainError


def error_body(code: str, detail: str, fields: dict | None = None) -> dict:
    body = {"code": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def _first_message(fields) -> str:
    if isinstance(fields, dict):
        for name, errors in fields.items():
            message = _first_message(errors)
            return message if name == "non_field_errors" else f"{name}: {message}"
    if isinstance(fields, list) and fields:
        return _first_message(fields[0])
    return str(fields)


def flatten_fields(errors, prefix: str = "") -> dict[str, list[str]]:
    """Nested serializer errors as dotted paths (`items.0.price`), each a list of messages, so a
    client finds every problem with one lookup per field."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for name, value in errors.items():
            flat.update(flatten_fields(value, f"{prefix}.{name}" if prefix else str(name)))
    elif isinstance(errors, list) and errors and all(isinstance(item, str) for item in errors):
        flat[prefix or "non_field_errors"] = [str(item) for item in errors]
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            if value:
                flat.update(flatten_fields(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        flat[prefix or "non_field_errors"] = [str(errors)]
    return flat


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        fields = flatten_fields(exc.fields) if exc.fields else None
        return Response(error_body(exc.code, exc.detail, fields), status=exc.status)
    if isinstance(exc, IntegrityError):
        # A race between two writers on a unique constraint that validation already checks.
        return Response(error_body("conflict", "This conflicts with an existing record."), status=409)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = error_body("invalid", _first_message(fields), flatten_fields(fields))
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(code, str(exc.detail))
    return response


def json_error(code: str, detail: str, http_status: int = status.HTTP_400_BAD_REQUEST):
    from django.http import JsonResponse

    return JsonResponse(error_body(code, detail), status=http_status)
