"""The isolation matrix's map of the project: every URL pattern and websocket route, walked from
the URL conf, and what each must do for a member of another workspace.

Most patterns need no entry: an API viewset's routes are planned from the viewset (its queryset's
model names the object, its router actions the methods), and a scoped ModelAdmin's standard pages
from the admin registry. Everything else is in `ROUTES`, keyed by the pattern's name (or by its
pattern when it has none). A pattern that fits neither makes `test_every_url_pattern_has_a_plan`
fail and say what to add here.
"""

import re
from dataclasses import dataclass, field

from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver

from apps.core.admin import WorkspaceScopedAdmin
from apps.core.api.viewsets import WorkspaceViewSet

# What a plan may fill an object parameter with (the model's object in the world, by label).
OBJECT_PARAMETERS = {"pk", "id", "object_id", "slug", "attachment_uuid", "channel_uuid", "content_type_id", "token"}
UNSAFE = ("post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    pattern: str  # as the URL conf spells it, e.g. "api/v1/^contacts/(?P<pk>[^/.]+)/$"
    name: str | None  # with its namespace, e.g. "admin:contacts_contact_change"
    callback: object

    @property
    def key(self) -> str:
        return self.name or self.pattern

    @property
    def params(self) -> tuple[str, ...]:
        groups = re.findall(r"\(\?P<(\w+)>", self.pattern)
        return tuple(groups or re.findall(r"<(?:\w+:)?(\w+)>", self.pattern))

    def url(self, values: dict) -> str:
        path = re.sub(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)", lambda m: str(values[m.group(1)]), self.pattern)
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), path)
        return "/" + path.replace("^", "").replace("$", "")


def url_routes() -> list[Route]:
    routes = []

    def walk(resolver, prefix="", namespace=None):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                walk(entry, prefix + str(entry.pattern), entry.namespace or namespace)
            elif isinstance(entry, URLPattern):
                name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
                routes.append(Route(prefix + str(entry.pattern), name, entry.callback))

    walk(get_resolver())
    return routes


def websocket_routes() -> list[str]:
    from config.routing import public_websocket_urlpatterns, websocket_urlpatterns

    return [str(entry.pattern) for entry in (*websocket_urlpatterns, *public_websocket_urlpatterns)]


# Plans -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Public:
    """Reachable without being a member, on purpose; `reason` says why that is safe."""

    reason: str


@dataclass(frozen=True)
class Open:
    """Names no object: B's member gets their own workspace's page (or a refusal), never A's data."""

    api: bool = False  # also asked with B's API token
    method: str = "get"
    allowed: tuple = (200, 302, 400, 403, 405)
    constants: dict = field(default_factory=dict)  # values of parameters that name no object
    pending: str = ""  # an app still being written: walked, but a failure is expected


@dataclass(frozen=True)
class Obj:
    """Names one object of A (`label`, a key of the world's objects): B's member gets `refused`
    for every method; A's own owner reaches it (GET `ok`, other methods anything but 404)."""

    label: str | None  # None: the parameters are all `constants`
    methods: tuple = ("get",)  # what B tries
    mapped: tuple = ("get",)  # what the route answers (the others are 405)
    api: bool = False
    refused: tuple = (404,)
    ok: tuple = (200,)
    follow: bool = False  # a redirect to the object's page: follow it
    constants: dict = field(default_factory=dict)
    owner_skips: tuple = ()  # writes A's owner does not try (see where it is set)
    token_ok: tuple | None = None  # what A's token gets, when not `ok`
    pending: str = ""


SUPERUSER_ONLY_ADMINS = {"workspaces.user", "auth.group"}  # and every django_celery_beat model
ADMIN_SITE = "Parley's admin site itself: B's owner administers B, so gets B's pages and nothing of A's"

ROUTES = {
    # Public by design ---------------------------------------------------------------------------
    "healthz": Public("load balancers' probe: database and Redis up or down, no workspace data"),
    "ping": Public("the benchmarks' trivial view: answers 'pong'"),
    "javascript-catalog": Public("the translations of the pages' scripts"),
    "login": Public("the sign-in page"),
    "schema": Public("the OpenAPI reference describes the API and shows no workspace's data"),
    "api-docs": Public("Swagger UI of that reference"),
    "webhook": Public(
        "providers' webhooks: the channel's uuid is given to the provider and the request is verified "
        "by its signature (test_webhook_of_a_without_its_signature_is_refused)"
    ),
    "widget-script": Public("the web chat widget, embedded on the shop's own public site by its channel uuid"),
    "widget-upload": Public(
        "the widget's uploads: a visitor token signed for the channel is the credential "
        "(test_widget_upload_to_a_needs_a_visitor_of_a)"
    ),
    "widget-file": Public(
        "a file link signed for one visitor of one channel (test_widget_file_of_a_needs_its_signed_link)"
    ),
    "workflow-callback": Public(
        "an escalation's answer: the 192-bit token sent with the escalation is the credential"
    ),
    "api/v1/<path:unknown>": Public("the API's JSON 404 for any path it does not know"),
    # Pages ----------------------------------------------------------------------------------------
    "home": Open(),
    "inbox": Open(),
    "logout": Open(),
    "password_change": Open(),
    "password_change_done": Open(),
    "set_language": Open(method="post"),
    "set_status": Open(method="post"),
    "switch_workspace": Obj("workspaces.workspace", methods=("post",), mapped=("post",)),
    "attachment": Obj("conversations.attachment"),
    "analytics:dashboard": Open(),
    "analytics:conversations": Open(),
    "analytics:live": Open(),
    # The API's views that are not workspace viewsets --------------------------------------------
    "report-conversations": Open(api=True),
    "report-export": Open(api=True),
    "report-summary": Open(api=True),
    # The admin site's own views -----------------------------------------------------------------
    "admin:index": Open(),
    "admin:login": Open(),
    "admin:logout": Open(),
    "admin:password_change": Open(),
    "admin:password_change_done": Open(),
    "admin:jsi18n": Open(),
    "admin:autocomplete": Open(),
    "admin:app_list": Open(constants={"app_label": "contacts"}),
    "admin/(?P<url>.*)$": Open(allowed=(404,), constants={"url": "no/such/page/"}),
    "admin:view_on_site": Obj("contacts.contact", ok=(404,)),  # no model has a page outside the admin
    "admin:auth_user_password_change": Obj("workspaces.user", refused=(403,), ok=(403,)),  # superusers only
    # Custom pages of scoped ModelAdmins -----------------------------------------------------------
    "admin:connectors_messagetemplate_sync": Open(),
    "admin:connectors_messagetemplate_preview": Obj("connectors.messagetemplate"),
    "admin:broadcasts_segment_count": Open(method="post"),
    "admin:broadcasts_broadcast_act": Obj(
        "broadcasts.broadcast", methods=("post",), mapped=("post",), constants={"verb": "pause"}
    ),
    "admin:broadcasts_broadcast_progress": Obj("broadcasts.broadcast"),
    "admin:broadcasts_broadcast_stats": Obj("broadcasts.broadcast"),
    "admin:broadcasts_broadcast_report": Obj("broadcasts.broadcast"),
    "admin:broadcasts_broadcast_export": Obj("broadcasts.broadcast"),
    "admin:contacts_contact_export": Obj("contacts.contact"),
    # A's owner only opens the confirmation: an erasure removes files, outside the rolled-back transaction.
    "admin:contacts_contact_erase": Obj(
        "contacts.contact", methods=("get", "post"), mapped=("get", "post"), owner_skips=("post",)
    ),
    "admin:workflows_workflow_import": Open(),
    "admin:workflows_workflow_export": Obj("workflows.workflow"),
    "admin:workflows_workflow_version": Obj("workflows.workflow", constants={"number": 1}),
    "admin:workflows_workflow_try": Obj("workflows.workflow"),
    "admin:workflows_workflow_try_state": Obj("workflows.workflow"),
    "admin:workflows_workflow_try_restart": Obj("workflows.workflow", methods=("post",), mapped=("post",)),
    "admin:workflows_workflow_try_send": Obj("workflows.workflow", methods=("post",), mapped=("post",)),
}

# The standard pages every ModelAdmin has, by what follows "admin/<app>/<model>/".
ADMIN_PAGES = {
    "": "changelist",
    "add/": "add",
    "<path:object_id>/": "redirect",
    "<path:object_id>/change/": "change",
    "<path:object_id>/delete/": "delete",
    "<path:object_id>/history/": "history",
}


class NoPlan(Exception):
    """The pattern has no plan: the message says what to add, and where."""


def plan_for(route: Route):
    if route.key in ROUTES:
        return ROUTES[route.key]
    viewset = getattr(route.callback, "cls", None)
    if viewset is not None and issubclass(viewset, WorkspaceViewSet) and getattr(route.callback, "actions", None):
        return _api_plan(route, viewset)
    match = re.fullmatch(r"admin/(\w+)/(\w+)/(.*)", route.pattern)
    if match and match.group(3) in ADMIN_PAGES:
        return _admin_plan(route, *match.groups())
    raise NoPlan(
        f"{route.pattern!r} ({route.name or 'no name'}, {_view_name(route.callback)}) has no isolation plan: add "
        f"{route.key!r} to ROUTES in tests/trust/isolation.py: Obj('<app>.<model>') for the object its parameters "
        "name, Open() when it names none, or Public('<why anyone may call it>')."
    )


def _api_plan(route: Route, viewset) -> Obj | Open:
    if not set(route.params) & OBJECT_PARAMETERS:
        return Open(api=True)
    model = viewset.queryset.model
    mapped = tuple(method for method in ("get", *UNSAFE) if method in route.callback.actions)
    # A person's notifications: an API token is nobody, so it has none.
    token_ok = (404,) if model._meta.label_lower == "conversations.notification" else None
    return Obj(model._meta.label_lower, methods=("get", *UNSAFE), mapped=mapped, api=True, token_ok=token_ok)


def _admin_plan(route: Route, app_label: str, model_name: str, page: str):
    from django.apps import apps

    model = apps.get_model(app_label, model_name)
    label = model._meta.label_lower
    model_admin = admin.site._registry[model]
    kind = ADMIN_PAGES[page]
    if label in SUPERUSER_ONLY_ADMINS or app_label == "django_celery_beat":
        # Only superusers see these: everyone else is refused whether the row exists or not.
        if kind in ("changelist", "add"):
            return Open(allowed=(403,))
        # Django's history page sends a missing row's URL back to the index (302) before it checks.
        refused = (403, 302) if kind == "history" else (403,)
        if label == "workspaces.user":  # A's owner: a person's account is not a workspace's row
            return Obj(label, refused=refused, ok=(403,), follow=kind == "redirect")
        return Obj(None, refused=refused, ok=(403,), follow=kind == "redirect", constants={"object_id": 1})
    if not isinstance(model_admin, WorkspaceScopedAdmin):
        raise NoPlan(
            f"the admin of {label} ({type(model_admin).__name__}) is not a WorkspaceScopedAdmin: make it one, or "
            "add the model to SUPERUSER_ONLY_ADMINS in tests/trust/isolation.py if only superusers may see it."
        )
    if kind in ("changelist", "add"):
        return Open()
    if kind == "redirect":
        return Obj(label, follow=True)
    # A's owner only reads: a form posted empty proves nothing, and a deletion would be real.
    # Some rows may be deleted by superusers only (403 to everyone else).
    ok = (200, 403) if kind == "delete" else (200,)
    return Obj(label, methods=("get", "post"), mapped=("get", "post"), owner_skips=("post",), ok=ok)


def _view_name(callback) -> str:
    view = getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback
    return f"{view.__module__}.{getattr(view, '__qualname__', view)}"


def routes_with_plans() -> list[tuple[Route, object]]:
    """Every pattern with its plan; one without a plan is left to the coverage test to name."""
    planned = []
    for route in url_routes():
        try:
            planned.append((route, plan_for(route)))
        except NoPlan:
            continue
    return planned


# Websocket routes: each is covered by a test in test_isolation_realtime.py.
WEBSOCKET_ROUTES = {
    "ws/": "the operators' socket: test_isolation_realtime.py (events, resync, typing, the workspace asked for)",
    "ws/widget/<uuid:channel_uuid>/": (
        "Public: the web chat visitor's socket, opened from the shop's site; its token is signed for one "
        "channel (test_isolation_realtime.py::test_a_visitor_token_of_a_does_not_join_bs_widget)"
    ),
}
