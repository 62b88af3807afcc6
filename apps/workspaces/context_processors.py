from apps.workspaces.models import ADMIN_ROLES, Role
from apps.workspaces.selectors import memberships_for_user


def workspaces(request):
    context = getattr(request, "workspace_context", None)
    user = getattr(request, "user", None)
    if context is None or user is None or not user.is_authenticated:
        return {}
    return {
        "current_workspace": context.workspace,
        "current_role": context.role,
        "current_role_label": Role(context.role).label if context.role in Role.values else context.role,
        "can_administer": user.is_superuser or context.role in ADMIN_ROLES,
        "my_memberships": memberships_for_user(user),
    }
