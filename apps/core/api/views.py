from rest_framework import status

from apps.core.api.errors import json_error


def not_found(request, unknown=""):
    return json_error("not_found", "No such endpoint.", status.HTTP_404_NOT_FOUND)
