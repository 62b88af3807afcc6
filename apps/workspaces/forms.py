from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _
from django_ratelimit.core import get_usage

from apps.workspaces.models import AgentStatus

IP_FAILURE_LIMIT = "30/5m"


def _username_key(group, request):
    return (request.POST.get("username") or "").strip().lower()


class ThrottledLoginMixin:
    """Counts failed sign-ins per username and per address; past the limit the form refuses
    even a right password until the window has passed, so guessing is slow."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": _("Too many failed sign-ins. Wait a few minutes and try again."),
    }

    def _failures(self, increment: bool) -> list[dict]:
        limits = (
            ("login-user", _username_key, settings.LOGIN_FAILURE_LIMIT),
            ("login-ip", "ip", IP_FAILURE_LIMIT),
        )
        return [
            get_usage(self.request, group=group, key=key, rate=rate, method="POST", increment=increment)
            for group, key, rate in limits
        ]

    def _limited(self, increment: bool) -> bool:
        return any(usage is not None and usage["count"] >= usage["limit"] for usage in self._failures(increment))

    def clean(self):
        if self.request is not None and self._limited(increment=False):
            raise forms.ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            return super().clean()
        except forms.ValidationError:
            if self.request is not None:
                self._failures(increment=True)
            raise


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin lets in supervisors and owners, not only Django's `is_staff` users."""

    def confirm_login_allowed(self, user):
        from apps.workspaces.selectors import workspaces_administered_by

        AuthenticationForm.confirm_login_allowed(self, user)
        if not (user.is_superuser or workspaces_administered_by(user).exists()):
            raise forms.ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": "username"},
            )


class LanguageForm(forms.Form):
    language = forms.ChoiceField(choices=[("", _("Browser default")), *settings.LANGUAGES], required=False)


class AgentStatusForm(forms.Form):
    status = forms.ChoiceField(choices=AgentStatus.Status.choices)
