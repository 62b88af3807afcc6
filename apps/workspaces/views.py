from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from apps.workspaces import services
from apps.workspaces.forms import AgentStatusForm, LanguageForm, LoginForm
from apps.workspaces.selectors import SESSION_WORKSPACE_KEY, workspace_context_for_user


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    redirect_authenticated_user = True


@login_required
def home(request):
    context = request.workspace_context
    agent_status = getattr(context.membership, "agent_status", None) if context else None
    return render(
        request,
        "workspaces/home.html",
        {
            "language_form": LanguageForm(initial={"language": request.user.language}),
            "status_form": AgentStatusForm(initial={"status": getattr(agent_status, "status", "offline")}),
            "agent_status": agent_status,
        },
    )


@login_required
@require_POST
def switch_workspace(request, slug):
    context = workspace_context_for_user(request.user, slug)
    if context is None:
        raise Http404
    request.session[SESSION_WORKSPACE_KEY] = context.workspace.id
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return redirect(target if target and safe else "home")


@login_required
@require_POST
def set_language(request):
    form = LanguageForm(request.POST)
    if form.is_valid():
        services.user_set_language(user=request.user, language=form.cleaned_data["language"])
    return redirect("home")


@login_required
@require_POST
def set_status(request):
    form = AgentStatusForm(request.POST)
    context = request.workspace_context
    if context is None or not form.is_valid():
        messages.error(request, _("Choose online, away or offline."))
        return redirect("home")
    services.agent_status_set(membership=context.membership, status=form.cleaned_data["status"])
    return redirect("home")
