import json
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from apps.workspaces import services
from apps.workspaces.models import AgentStatus, Membership, Shift, ShiftException, Team, User, Workspace

DEMO_FILE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
WORKFLOWS_DIR = Path(settings.BASE_DIR) / "fixtures" / "workflows"
FAQ_DIR = Path(settings.BASE_DIR) / "fixtures" / "faq"
SIMULATOR_CHANNELS = Path(settings.BASE_DIR) / "var" / "simulator-channels.json"


class Command(BaseCommand):
    help = "Load the demo company from fixtures/demo.json. Safe to run again: it reuses what exists."

    def add_arguments(self, parser):
        parser.add_argument("--quiet-logins", action="store_true", help="do not print the logins")
        parser.add_argument(
            "--history",
            action="store_true",
            help="also give the demo workspaces four weeks of closed conversations for the analytics (once)",
        )

    @transaction.atomic
    def handle(self, *args, quiet_logins=False, history=False, **options):
        demo = json.loads(DEMO_FILE.read_text())
        users = {spec["username"]: self._user(spec, demo["password"]) for spec in demo["users"]}
        for spec in demo["workspaces"]:
            self._workspace(spec, users)
            if history and spec.get("history"):
                # Past weeks of closed conversations, so the analytics dashboard has pictures at once.
                from apps.analytics.demo import history_generate  # analytics builds on workspaces

                history_generate(workspace=Workspace.objects.get(slug=spec["slug"]), **spec["history"])
        self._write_simulator_channels()
        if not quiet_logins:
            self.stdout.write(self.logins(demo))

    def _user(self, spec, password) -> User:
        user, created = User.objects.get_or_create(
            username=spec["username"],
            defaults={
                "first_name": spec["first_name"],
                "last_name": spec["last_name"],
                "email": spec["email"],
                "language": spec.get("language", ""),
                "is_superuser": spec.get("superuser", False),
                "is_staff": spec.get("superuser", False),
            },
        )
        if created:
            user.set_password(password)
            user.save(update_fields=["password"])
        return user

    def _workspace(self, spec, users) -> None:
        workspace = Workspace.objects.filter(slug=spec["slug"]).first() or services.workspace_create(
            name=spec["name"],
            slug=spec["slug"],
            timezone_name=spec["timezone"],
            default_language=spec["default_language"],
        )
        memberships = {
            username: services.membership_add(workspace=workspace, user=users[username], role=role)
            for username, role in spec["members"].items()
        }
        for team_spec in spec["teams"]:
            team, _ = Team.objects.get_or_create(
                workspace=workspace,
                name=team_spec["name"],
                defaults={
                    "languages": team_spec["languages"],
                    "categories": team_spec["categories"],
                },
            )
            services.team_set_members(team=team, memberships=[memberships[u] for u in team_spec["members"]])
            hours = team_spec["shifts"]
            for weekday in hours["days"]:
                Shift.objects.get_or_create(
                    workspace=workspace,
                    team=team,
                    weekday=weekday,
                    starts_at=time.fromisoformat(hours["from"]),
                    ends_at=time.fromisoformat(hours["to"]),
                )
        if spec.get("whatsapp"):
            self._whatsapp_channel(workspace, spec["whatsapp"], spec.get("templates", []))
        self._inbox_setup(workspace, spec)
        if spec.get("webchat"):
            self._webchat_channel(workspace, spec["webchat"])
        for channel_spec in spec.get("channels", []):
            self._provider_channel(workspace, channel_spec)
        for holiday in spec["holidays"]:
            team = Team.objects.get(workspace=workspace, name=holiday["team"])
            ShiftException.objects.get_or_create(
                workspace=workspace,
                team=team,
                date=date.fromisoformat(holiday["date"]),
                defaults={"closed": True, "reason": holiday["reason"]},
            )
        self._agents_online(workspace, spec.get("presence"), memberships)
        self._bot_settings(workspace, spec.get("bot"))
        self._faq(workspace, spec.get("faq", []))
        self._workflows(workspace, spec.get("workflows", []))
        for customer in spec.get("customers", []):
            self._customer(workspace, customer)
        if spec.get("marketing"):
            self._marketing(workspace, spec["marketing"])

    def _agents_online(self, workspace, presence, memberships) -> None:
        """The demo's agents are at their desks, so the bots' routing has someone to assign.
        Set directly, not through agent_status_set: that records a heartbeat, and with no
        browser open the presence sweep would mark them offline two minutes later. An agent
        who signs in and closes the inbox goes offline as anyone does."""
        if not presence:
            return
        agents = AgentStatus.objects.filter(membership__in=[memberships[u] for u in presence["online"]])
        agents.update(
            status=AgentStatus.Status.ONLINE,
            capacity=presence["capacity"],
            last_seen_at=None,
            changed_at=timezone.now(),
        )

    def _bot_settings(self, workspace, spec) -> None:
        """Created once; a supervisor's later changes in the admin are kept."""
        from apps.workflows.models import BotSettings

        if not spec:
            return
        BotSettings.objects.get_or_create(
            workspace=workspace,
            defaults={
                "fallback_team": Team.objects.get(workspace=workspace, name=spec["fallback_team"]),
                "faq_threshold": spec.get("faq_threshold", 0.5),
                "csat_alert_below": spec.get("csat_alert_below", 2),
            },
        )

    def _faq(self, workspace, files) -> None:
        from apps.workflows.models import FaqEntry

        for name in files:
            for entry in json.loads((FAQ_DIR / name).read_text()):
                FaqEntry.objects.get_or_create(
                    workspace=workspace,
                    intent=entry["intent"],
                    language=entry["language"],
                    defaults={k: entry[k] for k in ("examples", "answer", "follow_up")},
                )

    def _workflows(self, workspace, files) -> None:
        """Imports the demo workflows the workspace does not have yet: one a supervisor has
        edited in the admin is left as it is."""
        from apps.workflows.definition import definitions_parse, workflows_import
        from apps.workflows.models import Workflow

        existing = set(Workflow.objects.filter(workspace=workspace).values_list("name", flat=True))
        for name in files:
            definitions = definitions_parse(json.loads((WORKFLOWS_DIR / name).read_text()))
            missing = [definition for definition in definitions if definition["name"] not in existing]
            if missing:
                workflows_import(workspace=workspace, definitions=missing)

    def _customer(self, workspace, spec) -> None:
        """A customer the order system knows, with their orders (what the bots' order status
        answers from) and, optionally, the chat identities the simulator's page uses."""
        from apps.connectors.models import Channel
        from apps.contacts.models import Order
        from apps.contacts.selectors import contact_match
        from apps.contacts.services import contact_resolve, contact_save, order_upsert

        fields = {k: spec[k] for k in ("external_id", "name", "phone", "email", "language", "country") if k in spec}
        if spec.get("marketing_opt_in"):
            at = timezone.now().isoformat()
            fields["marketing_consent"] = {
                kind: {"opted_in": True, "at": at, "source": "demo"} for kind in spec["marketing_opt_in"]
            }
        contact = contact_match(workspace_id=workspace.pk, external_id=spec["external_id"]) or contact_save(
            workspace_id=workspace.pk, data=fields
        )
        if spec.get("tags"):
            from apps.contacts.models import Tag

            contact.tags.add(*(Tag.objects.get_or_create(workspace=workspace, name=name)[0] for name in spec["tags"]))
        for identity in spec.get("identities", []):
            channel = Channel.objects.filter(workspace=workspace, kind=identity["channel"]).order_by("id").first()
            contact_resolve(
                channel=channel,
                external_id=identity["external_id"],
                name=contact.name,
                customer_id=contact.external_id,
            )
        for order in spec.get("orders", []):
            if Order.objects.filter(workspace=workspace, external_id=order["external_id"]).exists():
                continue
            data = {k: v for k, v in order.items() if k != "placed_days_ago"}
            data["total"] = Decimal(order["total"])
            data["placed_at"] = timezone.now() - timedelta(days=order["placed_days_ago"], hours=3)
            order_upsert(workspace_id=workspace.pk, data=data, contact=contact)

    def _marketing(self, workspace, spec) -> None:
        """Broadcast rules, segments, campaigns (their beat schedules included) and draft
        broadcasts; each made once, so a supervisor's later changes are kept."""
        from apps.broadcasts.models import BroadcastSettings, Segment

        settings_spec = dict(spec.get("settings", {}))
        for name in ("quiet_from", "quiet_until"):
            if name in settings_spec:
                settings_spec[name] = time.fromisoformat(settings_spec[name])
        BroadcastSettings.objects.get_or_create(workspace=workspace, defaults=settings_spec)
        for segment in spec.get("segments", []):
            Segment.objects.get_or_create(
                workspace=workspace,
                name=segment["name"],
                defaults={"description": segment.get("description", ""), "definition": segment["definition"]},
            )
        channel = self._demo_whatsapp(workspace)
        for campaign in spec.get("campaigns", []):
            self._campaign(workspace, channel, campaign)
        for broadcast in spec.get("broadcasts", []):
            self._draft_broadcast(workspace, channel, broadcast)

    @staticmethod
    def _demo_whatsapp(workspace):
        from apps.connectors.models import Channel

        return Channel.objects.filter(workspace=workspace, kind="whatsapp").order_by("id").first()

    def _campaign(self, workspace, channel, spec) -> None:
        from apps.broadcasts.campaigns import campaign_schedule_sync
        from apps.broadcasts.models import Campaign, Segment

        if Campaign.objects.filter(workspace=workspace, name=spec["name"]).exists():
            return
        crontab = {k: spec[k] for k in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year") if k in spec}
        campaign = Campaign.objects.create(
            workspace=workspace,
            name=spec["name"],
            kind=spec["kind"],
            enabled=spec.get("enabled", True),
            channel=channel,
            template=channel.templates.get(name=spec["template"]),
            variables=spec["variables"],
            segment=Segment.objects.get(workspace=workspace, name=spec["segment"]) if spec.get("segment") else None,
            settings=spec.get("settings", {}),
            **crontab,
        )
        campaign_schedule_sync(campaign=campaign)

    def _draft_broadcast(self, workspace, channel, spec) -> None:
        from apps.broadcasts.models import Broadcast, Segment
        from apps.broadcasts.services import broadcast_create

        if Broadcast.objects.filter(workspace=workspace, name=spec["name"]).exists():
            return
        broadcast_create(
            workspace=workspace,
            name=spec["name"],
            channel=channel,
            template=channel.templates.get(name=spec["template"]),
            variables=spec["variables"],
            audience=Broadcast.Audience.SEGMENT,
            segment=Segment.objects.get(workspace=workspace, name=spec["segment"]),
        )

    def _inbox_setup(self, workspace, spec) -> None:
        """What operators need on day one: closing categories, tags, quick replies."""
        from apps.contacts.models import Tag
        from apps.conversations.models import QuickReply

        if spec.get("closing_categories") and not workspace.closing_categories:
            workspace.closing_categories = spec["closing_categories"]
            workspace.save(update_fields=["closing_categories"])
        for tag in spec.get("tags", []):
            Tag.objects.get_or_create(workspace=workspace, name=tag["name"], defaults={"color": tag["color"]})
        for reply in spec.get("quick_replies", []):
            QuickReply.objects.get_or_create(
                workspace=workspace, shortcut=reply["shortcut"], defaults={"text": reply["text"]}
            )

    def _whatsapp_channel(self, workspace, spec, templates) -> None:
        from apps.connectors.models import Channel, MessageTemplate

        channel = Channel.objects.filter(workspace=workspace, kind="whatsapp", name=spec["name"]).first()
        if channel is None:
            channel = self._create_whatsapp_channel(workspace, spec)
        for template in templates:
            MessageTemplate.objects.get_or_create(
                workspace=workspace,
                channel=channel,
                name=template["name"],
                language=template["language"],
                defaults={k: template[k] for k in ("category", "body", "example")},
            )

    def _create_whatsapp_channel(self, workspace, spec):
        from apps.connectors.models import Channel

        return Channel.objects.create(
            workspace=workspace,
            kind="whatsapp",
            name=spec["name"],
            credentials={
                "access_token": f"demo-token-{spec['phone_number_id']}",
                "app_secret": f"demo-secret-{spec['phone_number_id']}",
                "phone_number_id": spec["phone_number_id"],
                "waba_id": f"WABA{spec['phone_number_id']}",
            },
            settings={"base_url": settings.SIMULATOR_URL, "display_phone_number": spec["display_phone_number"]},
        )

    def _webchat_channel(self, workspace, spec) -> None:
        from apps.connectors.models import Channel

        if Channel.objects.filter(workspace=workspace, kind="webchat", name=spec["name"]).exists():
            return
        Channel.objects.create(
            workspace=workspace,
            kind="webchat",
            name=spec["name"],
            # The demo shop page is served by the simulator, on its own origin.
            settings={
                "allowed_origins": [settings.SIMULATOR_URL, settings.PUBLIC_URL],
                "greeting": spec["greeting"],
                "color": spec["color"],
                "prechat": spec["prechat"],
            },
        )

    def _provider_channel(self, workspace, spec) -> None:
        """A Messenger page, Instagram account, Telegram bot, WeChat account, mailbox or app, all
        played by the channel simulator."""
        from apps.connectors.models import Channel

        if Channel.objects.filter(workspace=workspace, kind=spec["kind"], name=spec["name"]).exists():
            return
        credentials, channel_settings = demo_channel_config(spec)
        Channel.objects.create(
            workspace=workspace,
            kind=spec["kind"],
            name=spec["name"],
            credentials=credentials,
            settings={"base_url": settings.SIMULATOR_URL, "demo": spec, **channel_settings},
            rate_limit_per_second=30 if spec["kind"] == "telegram" else 80,
        )

    def _write_simulator_channels(self) -> None:
        """The simulator plays the provider for the demo's channels; it reads them at start."""
        from apps.connectors.models import Channel

        registrations = [
            {
                "kind": "whatsapp",
                "name": channel.name,
                "phone_number_id": channel.credentials["phone_number_id"],
                "display_phone_number": channel.settings.get("display_phone_number", ""),
                "waba_id": channel.credentials["waba_id"],
                "access_token": channel.credentials["access_token"],
                "app_secret": channel.credentials["app_secret"],
                "verify_token": channel.verify_token,
                "webhook_url": channel.webhook_url,
            }
            for channel in Channel.objects.filter(kind="whatsapp", settings__base_url=settings.SIMULATOR_URL)
        ]
        registrations += [
            {"kind": "webchat", "name": channel.name, "script_url": channel.widget_url}
            for channel in Channel.objects.filter(
                kind="webchat", settings__allowed_origins__contains=[settings.SIMULATOR_URL]
            )
        ]
        registrations += [
            simulator_registration(channel)
            for channel in Channel.objects.filter(settings__base_url=settings.SIMULATOR_URL, settings__has_key="demo")
        ]
        SIMULATOR_CHANNELS.parent.mkdir(parents=True, exist_ok=True)
        SIMULATOR_CHANNELS.write_text(json.dumps(registrations, indent=2))

    @staticmethod
    def logins(demo) -> str:
        roles = {}
        for membership in Membership.objects.select_related("user", "workspace"):
            roles.setdefault(membership.user.username, []).append(f"{membership.role} in {membership.workspace.name}")
        lines = [f"Demo logins (password for all: {demo['password']}):"]
        for spec in demo["users"]:
            described = (
                "superuser (all workspaces)" if spec.get("superuser") else "; ".join(roles.get(spec["username"], []))
            )
            lines.append(f"  {spec['username']:<8} {described}")
        return "\n".join(lines)


def demo_channel_config(spec: dict) -> tuple[dict, dict]:
    """Credentials and settings of a demo channel; the simulator is given the same secrets."""
    kind = spec["kind"]
    if kind in ("messenger", "instagram"):
        page = spec["page_id"]
        return {
            "page_access_token": f"demo-page-token-{page}",
            "app_secret": f"demo-secret-{page}",
            "page_id": page,
        }, {}
    if kind == "telegram":
        return {"bot_token": spec["bot_token"]}, {"username": spec["username"]}
    if kind == "wechat":
        app = spec["app_id"]
        return {"app_id": app, "app_secret": f"demo-secret-{app}", "token": f"demotoken{app[-6:]}"}, {}
    if kind == "email":
        mail = {
            "address": spec["address"],
            "from_name": spec.get("from_name", "Nile Basket"),
            "smtp_host": "127.0.0.1",
            "smtp_port": settings.SIMULATOR_SMTP_PORT,
            "smtp_username": spec["address"],
            "smtp_security": "none",
        }
        if spec.get("mode") == "imap":
            mail.update(
                imap_host="127.0.0.1",
                imap_port=settings.SIMULATOR_IMAP_PORT,
                imap_username=spec["address"],
                imap_security="none",
            )
        return {"smtp_password": "demo-smtp-password", "imap_password": "demo-imap-password"}, mail
    if kind == "custom":
        app = spec["app_id"]
        outbound = f"{settings.SIMULATOR_URL}/custom/{app}/outbound"
        # The simulated app serves its customers' photos from loopback.
        return {"secret": f"demo-app-secret-{app}"}, {"outbound_url": outbound, "allow_private_media_urls": True}
    raise ValueError(f"no demo configuration for {kind} channels")


def simulator_registration(channel) -> dict:
    """What the simulator needs to play the provider of a demo channel."""
    spec, secrets = channel.settings["demo"], channel.credentials
    common = {"kind": channel.kind, "name": channel.name, "webhook_url": channel.webhook_url}
    if channel.kind in ("messenger", "instagram"):
        return {**common, **secrets, "verify_token": channel.verify_token}
    if channel.kind == "telegram":
        from apps.connectors.providers.telegram import webhook_secret

        # make run loads the demo before the simulator starts, so setWebhook cannot reach it
        # then; the simulator is told the webhook the way Parley's setWebhook would tell it.
        return {**common, **secrets, "username": spec["username"], "secret_token": webhook_secret(channel)}
    if channel.kind == "wechat":
        return {**common, **secrets, "original_id": spec["original_id"]}
    if channel.kind == "email":
        return {
            **common,
            "address": spec["address"],
            "mode": spec.get("mode", "webhook"),
            "webhook_url": f"{channel.webhook_url}?key={channel.verify_token}",
            "smtp_username": spec["address"],
            "smtp_password": secrets["smtp_password"],
            "imap_username": spec["address"],
            "imap_password": secrets["imap_password"],
        }
    return {**common, "app_id": spec["app_id"], "secret": secrets["secret"]}
