"""Signing in and out, the login throttle, account preferences and the workspace switcher."""

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import translation

from apps.workspaces.models import AgentStatus, Role
from apps.workspaces.selectors import SESSION_WORKSPACE_KEY
from tests.conftest import client_for
from tests.factories import PASSWORD, make_member, make_user, make_workspace

pytestmark = pytest.mark.django_db

THROTTLED = "Too many failed sign-ins"
RUSSIAN_CATALOG = Path(settings.BASE_DIR) / "locale" / "ru" / "LC_MESSAGES" / "django.mo"


@pytest.fixture(autouse=True)
def _english_afterwards():
    # The preferences middleware activates a user's language and nothing deactivates it, so a
    # Russian page would leave this thread speaking Russian to the tests that follow.
    yield
    translation.activate(settings.LANGUAGE_CODE)


def _sign_in(client: Client, username: str, password: str, path: str = "/login/"):
    return client.post(path, {"username": username, "password": password})


def _form_errors(response) -> list[str]:
    return list(response.context["form"].non_field_errors())


# Signing in -----------------------------------------------------------------------------------


def test_login_page_renders_in_english():
    response = Client().get("/login/")

    assert response.status_code == 200
    assert response.headers["Content-Language"] == "en"
    assert "Sign in to Parley" in response.content.decode()


def test_right_password_signs_in_and_redirects_home():
    user = make_user()
    client = Client()

    response = _sign_in(client, user.username, PASSWORD)

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_wrong_password_shows_a_form_error():
    user = make_user()

    response = _sign_in(Client(), user.username, "not-the-password")

    assert response.status_code == 200
    assert "_auth_user_id" not in response.wsgi_request.session
    errors = _form_errors(response)
    assert len(errors) == 1 and "correct username and password" in errors[0]


def test_right_password_is_refused_after_five_failures_for_that_username():
    assert settings.LOGIN_FAILURE_LIMIT == "5/5m"
    user = make_user()
    for _ in range(5):
        assert _sign_in(Client(), user.username, "guess").status_code == 200

    response = _sign_in(Client(), user.username, PASSWORD)

    assert response.status_code == 200
    assert "_auth_user_id" not in response.wsgi_request.session
    assert any(THROTTLED in error for error in _form_errors(response))


def test_four_failures_still_let_the_right_password_in():
    user = make_user()
    for _ in range(4):
        _sign_in(Client(), user.username, "guess")

    assert _sign_in(Client(), user.username, PASSWORD).status_code == 302


def test_throttle_counts_the_username_case_insensitively():
    make_user(username="layla")
    for attempt in ("Layla", "LAYLA", " layla ", "layla", "lAyLa"):
        _sign_in(Client(), attempt, "guess")

    response = _sign_in(Client(), "layla", PASSWORD)

    assert any(THROTTLED in error for error in _form_errors(response))


def test_failures_for_one_username_do_not_lock_out_another():
    victim, bystander = make_user(), make_user()
    for _ in range(5):
        _sign_in(Client(), victim.username, "guess")

    assert _sign_in(Client(), bystander.username, PASSWORD).status_code == 302


def test_admin_login_is_throttled_the_same_way():
    admin = make_user(is_superuser=True, is_staff=True)
    for _ in range(5):
        assert _sign_in(Client(), admin.username, "guess", "/admin/login/").status_code == 200

    response = _sign_in(Client(), admin.username, PASSWORD, "/admin/login/")

    assert response.status_code == 200
    assert "_auth_user_id" not in response.wsgi_request.session
    assert any(THROTTLED in error for error in _form_errors(response))


def test_admin_login_lets_a_superuser_in_below_the_limit():
    admin = make_user(is_superuser=True, is_staff=True)

    response = _sign_in(Client(), admin.username, PASSWORD, "/admin/login/")

    assert response.status_code == 302


def test_failures_on_the_site_login_also_lock_the_admin_login():
    admin = make_user(is_superuser=True, is_staff=True)
    for _ in range(5):
        _sign_in(Client(), admin.username, "guess")

    response = _sign_in(Client(), admin.username, PASSWORD, "/admin/login/")

    assert any(THROTTLED in error for error in _form_errors(response))


# Session --------------------------------------------------------------------------------------


def test_logout_ends_the_session():
    client = client_for(make_user())

    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    home = client.get("/")
    assert home.status_code == 302
    assert home["Location"].startswith("/login/")


def test_home_page_sends_anonymous_visitors_to_login():
    response = Client().get("/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_password_change_takes_effect_and_keeps_the_user_signed_in():
    user = make_user()
    client = client_for(user)
    new_password = "a-much-longer-new-secret-42"

    response = client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
    )

    assert response.status_code == 302
    assert response["Location"] == "/account/password/done/"
    assert client.get("/").status_code == 200
    user.refresh_from_db()
    assert user.check_password(new_password)
    assert _sign_in(Client(), user.username, PASSWORD).status_code == 200
    assert _sign_in(Client(), user.username, new_password).status_code == 302


def test_password_change_with_wrong_old_password_is_refused():
    user = make_user()

    response = client_for(user).post(
        "/account/password/",
        {
            "old_password": "nope",
            "new_password1": "x-long-enough-9",
            "new_password2": "x-long-enough-9",
        },
    )

    assert response.status_code == 200
    assert "old_password" in response.context["form"].errors
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


# Language -------------------------------------------------------------------------------------


def _russian_for(message: str) -> str | None:
    """The project's Russian for `message`, or None while the catalogue is not compiled yet."""
    if not RUSSIAN_CATALOG.exists():
        return None
    with translation.override("ru"):
        translated = translation.gettext(message)
    return translated if translated != message else None


def test_user_who_chose_russian_sees_home_page_in_russian(tenants):
    tenants.teammate.language = "ru"
    tenants.teammate.save(update_fields=["language"])

    response = client_for(tenants.teammate).get("/")

    assert response.status_code == 200
    assert response.headers["Content-Language"] == "ru"
    assert '<html lang="ru">' in response.content.decode()
    russian = _russian_for("Your workspaces")
    if russian is not None:
        assert russian in response.content.decode()
        assert "Your workspaces" not in response.content.decode()


def test_user_without_a_language_sees_home_page_in_english(tenants):
    response = client_for(tenants.teammate).get("/")

    assert response.headers["Content-Language"] == "en"
    assert "Your workspaces" in response.content.decode()


def test_setting_language_persists_it_on_the_user():
    user = make_user()

    response = client_for(user).post("/account/language/", {"language": "ru"})

    assert response.status_code == 302
    user.refresh_from_db()
    assert user.language == "ru"


def test_setting_an_unknown_language_changes_nothing():
    user = make_user(language="en")

    client_for(user).post("/account/language/", {"language": "xx"})

    user.refresh_from_db()
    assert user.language == "en"


# Workspace switcher ---------------------------------------------------------------------------


def test_member_of_two_workspaces_switches_to_the_other(tenants):
    make_member(tenants.b, Role.AGENT, user=tenants.teammate)
    client = client_for(tenants.teammate)
    assert client.get("/").context["current_workspace"] == tenants.a

    response = client.post("/workspaces/beta/switch/")

    assert response.status_code == 302
    assert client.session[SESSION_WORKSPACE_KEY] == tenants.b.pk
    assert client.get("/").context["current_workspace"] == tenants.b


def test_non_member_cannot_switch_to_a_workspace(tenants):
    client = client_for(tenants.teammate)

    response = client.post("/workspaces/beta/switch/")

    assert response.status_code == 404
    assert SESSION_WORKSPACE_KEY not in client.session


def test_switching_workspace_does_not_redirect_off_site(tenants):
    make_member(tenants.b, Role.AGENT, user=tenants.teammate)

    response = client_for(tenants.teammate).post("/workspaces/beta/switch/", {"next": "https://evil.example/"})

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_switching_workspace_follows_a_local_next(tenants):
    make_member(tenants.b, Role.AGENT, user=tenants.teammate)

    response = client_for(tenants.teammate).post("/workspaces/beta/switch/", {"next": "/account/password/"})

    assert response["Location"] == "/account/password/"


def test_switching_to_an_unknown_workspace_answers_404(tenants):
    assert client_for(tenants.teammate).post("/workspaces/nowhere/switch/").status_code == 404


# Agent status ---------------------------------------------------------------------------------


def test_agent_sets_own_status_online(tenants):
    status = AgentStatus.objects.get(membership__user=tenants.teammate)
    assert status.status == AgentStatus.Status.OFFLINE

    response = client_for(tenants.teammate).post("/account/status/", {"status": "online"})

    assert response.status_code == 302
    status.refresh_from_db()
    assert status.status == AgentStatus.Status.ONLINE
    assert status.last_seen_at is not None


def test_unknown_status_is_refused_and_changes_nothing(tenants):
    client_for(tenants.teammate).post("/account/status/", {"status": "asleep"})

    status = AgentStatus.objects.get(membership__user=tenants.teammate)
    assert status.status == AgentStatus.Status.OFFLINE


def test_status_goes_to_the_current_workspace_only(tenants):
    membership_b = make_member(tenants.b, Role.AGENT, user=tenants.teammate)
    client = client_for(tenants.teammate)
    client.post("/workspaces/beta/switch/")

    client.post("/account/status/", {"status": "away"})

    assert AgentStatus.objects.get(membership=membership_b).status == AgentStatus.Status.AWAY
    in_a = AgentStatus.objects.get(membership__user=tenants.teammate, workspace=tenants.a)
    assert in_a.status == AgentStatus.Status.OFFLINE


def test_user_without_a_workspace_cannot_set_a_status():
    make_workspace()
    user = make_user()

    response = client_for(user).post("/account/status/", {"status": "online"}, follow=True)

    assert "Choose online, away or offline." in response.content.decode()
    assert not AgentStatus.objects.filter(membership__user=user).exists()


# Security headers -----------------------------------------------------------------------------


def test_session_cookie_is_http_only():
    assert settings.SESSION_COOKIE_HTTPONLY is True


def test_pages_forbid_framing_and_content_sniffing():
    response = Client().get("/login/")

    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_session_cookie_set_at_sign_in_is_http_only():
    client = Client()

    _sign_in(client, make_user().username, PASSWORD)

    assert client.cookies[settings.SESSION_COOKIE_NAME]["httponly"] is True
