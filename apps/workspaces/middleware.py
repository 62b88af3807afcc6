from django.utils import timezone, translation

from apps.workspaces.selectors import SESSION_WORKSPACE_KEY, workspace_context_for_user


class UserPreferencesMiddleware:
    """For signed-in people on pages: their chosen language, and the current workspace (with
    its time zone active, so every datetime on the page is in the workspace's local time)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.workspace_context = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not request.path.startswith("/api/"):
            if user.language:
                translation.activate(user.language)
                request.LANGUAGE_CODE = user.language
            context = workspace_context_for_user(user, None, preferred_id=request.session.get(SESSION_WORKSPACE_KEY))
            request.workspace_context = context
            if context is not None:
                timezone.activate(context.workspace.tz)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
