from rest_framework import permissions

from apps.core.exceptions import PermissionDenied
from apps.workspaces.selectors import workspace_context_for_request


class IsWorkspaceMember(permissions.BasePermission):
    """Resolves the request's workspace (API token's, or the signed-in member's chosen one) and
    lets writes through only for the roles the view names in `write_roles`.

    Resolving here, before any queryset is built, is what keeps every API view scoped: the base
    viewset filters by `request.workspace` and nothing else.
    """

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        context = workspace_context_for_request(request)
        request.workspace = context.workspace
        request.workspace_role = context.role
        request.membership = context.membership
        if context.membership is not None:  # what the request's services would look up again (analytics)
            request.user.membership_in = (context.workspace.pk, context.membership.pk)
        if request.method not in permissions.SAFE_METHODS:
            allowed = getattr(view, "write_roles", ())
            if context.role not in allowed and not getattr(view, "member_writes", False):
                raise PermissionDenied("Your role in this workspace cannot change this.")
        return True
