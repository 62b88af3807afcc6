from django.contrib.auth import views as auth_views
from django.urls import path

from apps.workspaces import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "account/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("account/language/", views.set_language, name="set_language"),
    path("account/status/", views.set_status, name="set_status"),
    path("workspaces/<slug:slug>/switch/", views.switch_workspace, name="switch_workspace"),
]
