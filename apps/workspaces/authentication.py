from rest_framework import authentication, exceptions

from apps.workspaces.selectors import api_token_get_active
from apps.workspaces.services import api_token_touch


class TokenPrincipal:
    """Who an API call acts as: the workspace's back office, not a person."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False
    is_staff = False
    pk = id = None

    def __init__(self, token):
        self.token = token
        self.workspace = token.workspace

    def __str__(self) -> str:
        return f"API token {self.token.name}"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` with a workspace's API token."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        token = api_token_get_active(parts[1].decode(errors="replace"))
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API token.")
        api_token_touch(token=token)
        return TokenPrincipal(token), token

    def authenticate_header(self, request):
        return 'Bearer realm="parley"'
