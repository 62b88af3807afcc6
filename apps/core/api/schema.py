"""OpenAPI: how the API authenticates, for drf-spectacular (loaded by CoreConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.workspaces.authentication.BearerTokenAuthentication"
    name = "workspaceToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A workspace's API token (admin → API tokens, or `manage.py create_api_token`).",
        }


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "Stable, machine-readable."},
        "detail": {"type": "string", "description": "For a person."},
        "fields": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Per field, what is wrong with it.",
        },
    },
    "required": ["code", "detail"],
}
ERRORS = {
    "400": "The request is malformed or a field is invalid (see `fields`).",
    "401": "No valid token or session.",
    "403": "Your role may not do this.",
    "404": "No such object in this workspace (or a bad cursor).",
    "405": "This method is not allowed here.",
    "409": "It conflicts with the current state.",
    "413": "Too large.",
    "415": "Unsupported media type.",
    "429": "Too many requests; see `Retry-After`.",
}


def add_error_responses(result, generator, request, public):
    """Every operation may answer with the API's one error shape; say so in the schema."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    # Request bodies are strict (apps.core.api.serializers.StrictSerializerMixin): unknown fields
    # are a 400, so the schema says no other properties are allowed.
    for name, component in schemas.items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    reference = {"$ref": "#/components/schemas/Error"}
    for path in result.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": reference}}}
                )
    return result
