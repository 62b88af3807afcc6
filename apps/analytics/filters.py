"""What a report is about: a range of the workspace's own days and the filters a supervisor
picked. The dashboard, the drill-down, the export and `/api/v1/reports/` read the same query
parameters through `report_filters`, so a link copied from one opens the same numbers in another:

    from=2026-11-01&to=2026-11-30   (workspace-local dates, both included; default: the last 7 days)
    team=<id>&agent=<membership id>&channel=<id>&category=<text>&language=<code>

An unknown id (or one of another workspace) is an error naming the parameter, never a silent
"everything"."""

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.utils import timezone

from apps.core.exceptions import DomainError

MAX_DAYS = 366 * 2
EARLIEST, LATEST = date(2000, 1, 1), date(2999, 12, 31)  # far enough; 9999-12-31 has no "day after"
ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is true, int("²") is not


@dataclass(frozen=True)
class ReportFilters:
    workspace: object
    start: date  # first local day, included
    end: date  # last local day, included
    team_id: int | None = None
    agent_id: int | None = None
    channel_id: int | None = None
    category: str | None = None
    language: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def since(self) -> datetime:
        """The first instant of `start` in the workspace's time zone."""
        return datetime.combine(self.start, time.min, tzinfo=self.workspace.tz)

    @property
    def until(self) -> datetime:
        """The first instant after `end` (exclusive)."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=self.workspace.tz)

    def query(self, **changes) -> dict:
        """The query parameters that name these filters (for links)."""
        params = {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "team": self.team_id,
            "agent": self.agent_id,
            "channel": self.channel_id,
            "category": self.category,
            "language": self.language,
        }
        params.update(changes)
        return {key: value for key, value in params.items() if value not in (None, "")}


def _date(query, name: str, default: date) -> date:
    raw = query.get(name)
    if not raw:
        return default
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise DomainError(
            f"{name!r} must be a date like 2026-11-30.", code="invalid", fields={name: ["Not a date."]}
        ) from None
    if not EARLIEST <= value <= LATEST:
        raise DomainError(
            f"{name!r} must be between {EARLIEST} and {LATEST}.", code="invalid", fields={name: ["Out of range."]}
        )
    return value


def _id(query, name: str, model, workspace) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    if not ID.fullmatch(str(raw)) or not model.objects.filter(workspace=workspace, pk=int(raw)).exists():
        raise DomainError(f"No such {name} in this workspace.", code="invalid", fields={name: ["Unknown."]})
    return int(raw)


def report_filters(*, workspace, query) -> ReportFilters:
    """Reads the report's range and filters from query parameters (a QueryDict or a dict)."""
    from apps.connectors.models import Channel
    from apps.workspaces.models import Membership, Team

    today = timezone.now().astimezone(workspace.tz).date()
    end = _date(query, "to", today)
    start = _date(query, "from", end - timedelta(days=6))
    if start > end:
        raise DomainError("'from' must not be after 'to'.", code="invalid", fields={"from": ["After 'to'."]})
    if (end - start).days + 1 > MAX_DAYS:
        raise DomainError(f"At most {MAX_DAYS} days at once.", code="invalid", fields={"from": ["Range too long."]})
    return ReportFilters(
        workspace=workspace,
        start=start,
        end=end,
        team_id=_id(query, "team", Team, workspace),
        agent_id=_id(query, "agent", Membership, workspace),
        channel_id=_id(query, "channel", Channel, workspace),
        category=(query.get("category") or None),
        language=(query.get("language") or None),
    )
