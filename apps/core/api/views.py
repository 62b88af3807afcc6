from django.views.decorators.csrf import csrf_exempt
from rest_framework import status

from apps.core.api.errors import json_error


@csrf_exempt  # it changes nothing; a POST to a wrong path is a JSON 404, not Django's HTML CSRF page
def not_found(request, unknown=""):
    return json_error("not_found", "No such endpoint.", status.HTTP_404_NOT_FOUND)
