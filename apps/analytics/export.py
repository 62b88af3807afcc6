"""The per-conversation export: one row per `Cycle` (a conversation from (re)opening to closing)
with the columns docs/reports.md defines, as CSV, XLSX or JSON (`/api/v1/reports/`), and the
scheduled export that writes the same files to the "exports" storage.

Memory stays flat whatever the size: rows come from a server-side cursor over `values_list()`
(no model instances), the names of members, teams and channels are read once into dicts, CSV is
yielded a chunk of rows at a time and XLSX is written by xlsxwriter in constant-memory mode into
a temporary file."""

import csv
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import CharField, F, FloatField, Func, QuerySet

from apps.analytics.models import Cycle

logger = logging.getLogger(__name__)

CURSOR_CHUNK = 2000  # rows fetched from the server-side cursor at a time
CSV_CHUNK = 1000  # rows per piece of the CSV sent to the client
XLSX_MAX_ROWS = 1_048_576 - 1  # Excel's sheet limit, less the header; more rows go on to another sheet
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

# What each column holds: an integer, a text, an ISO 8601 UTC moment, or true/false. Empty (CSV),
# blank (XLSX) or null (JSON) is "did not happen" / "none". docs/reports.md defines every column.
INT, TEXT, MOMENT, BOOL = "int", "text", "moment", "bool"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("workspace", TEXT),
    ("conversation_id", INT),
    ("cycle", INT),
    ("channel_id", INT),
    ("channel", TEXT),
    ("channel_kind", TEXT),
    ("contact_id", INT),
    ("source", TEXT),
    ("opened_at", MOMENT),
    ("first_customer_message_at", MOMENT),
    ("first_assigned_at", MOMENT),
    ("first_response_at", MOMENT),
    ("closed_at", MOMENT),
    ("first_response_seconds", INT),
    ("assigned_response_seconds", INT),
    ("average_response_seconds", INT),
    ("responses", INT),
    ("resolution_seconds", INT),
    ("handle_seconds", INT),
    ("queue_wait_seconds", INT),
    ("assignee_id", INT),
    ("assignee", TEXT),
    ("assignees", TEXT),
    ("first_responder", TEXT),
    ("team_id", INT),
    ("team", TEXT),
    ("category", TEXT),
    ("language", TEXT),
    ("summary", TEXT),
    ("closed_by", TEXT),
    ("closed_by_name", TEXT),
    ("csat", INT),
    ("csat_agent", TEXT),
    ("messages_in", INT),
    ("messages_out", INT),
    ("messages_bot", INT),
    ("notes", INT),
    ("bot_involved", BOOL),
    ("handed_over", BOOL),
    ("contained", BOOL),
    ("reopened", BOOL),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
_BOOLS = tuple(index for index, (_, kind) in enumerate(COLUMNS) if kind == BOOL)

# The Cycle fields a row is made of, in the order `export_row` unpacks them.
FIELDS = (
    *("conversation_id", "number", "channel_id", "contact_id", "source", "opened_at", "first_message_at"),
    *("first_assigned_at", "first_response_at", "closed_at", "first_response_seconds"),
    *("assigned_response_seconds", "responses", "response_seconds", "resolution_seconds", "handle_seconds"),
    *("queue_seconds", "assignee_id", "assignees", "responder_id", "team_id", "category", "language"),
    *("summary", "closed_by", "closer_id", "csat", "csat_agent_id", "messages_in", "messages_out"),
    *("messages_bot", "notes", "bot", "handed_over", "contained"),
)


@dataclass(frozen=True)
class Names:
    """The names a row shows, read once per export instead of joined into every row."""

    workspace: str
    members: dict[int, str]
    teams: dict[int, str]
    channels: dict[int, tuple[str, str]]

    def member(self, membership_id: int | None) -> str:
        if membership_id is None:
            return ""
        # A removed member's id stays in `assignees`: still counted, shown by its id.
        return self.members.get(membership_id) or f"#{membership_id}"


def names_of(workspace) -> Names:
    from apps.connectors.models import Channel
    from apps.workspaces.models import Membership, Team

    members = Membership.objects.filter(workspace=workspace).values_list(
        "id", "user__first_name", "user__last_name", "user__username"
    )
    return Names(
        workspace=workspace.slug,
        members={pk: f"{first} {last}".strip() or username for pk, first, last, username in members},
        teams=dict(Team.objects.filter(workspace=workspace).values_list("id", "name")),
        channels={
            pk: (name, kind)
            for pk, name, kind in Channel.objects.filter(workspace=workspace).values_list("id", "name", "kind")
        },
    )


def cycles_for_report(filters) -> QuerySet[Cycle]:
    """The cycles a report covers: opened in [since, until) and matching its filters, exactly as the
    dashboard's drill-down picks them (`agent` is the cycle's last assignee)."""
    from apps.analytics.selectors import cycle_rows

    return cycle_rows(filters, at="opened_at", agent="assignee")


def export_row(values: tuple, names: Names) -> tuple:
    """One row in COLUMNS order from one cycle's FIELDS values."""
    (conversation_id, number, channel_id, contact_id, source, opened_at, first_message_at,
     first_assigned_at, first_response_at, closed_at, first_response_seconds,
     assigned_response_seconds, responses, response_seconds, resolution_seconds, handle_seconds,
     queue_seconds, assignee_id, assignees, responder_id, team_id, category, language,
     summary, closed_by, closer_id, csat, csat_agent_id, messages_in, messages_out,
     messages_bot, notes, bot, handed_over, contained) = values  # fmt: skip
    channel, channel_kind = names.channels.get(channel_id, ("", ""))
    name = names.members.get  # None (nobody) and an id removed since are both ""
    # A plain tuple, not one built from parts: this runs a million times for a large export.
    return (
        names.workspace, conversation_id, number, channel_id, channel, channel_kind, contact_id, source,
        opened_at, first_message_at, first_assigned_at, first_response_at, closed_at,
        first_response_seconds, assigned_response_seconds,
        round(response_seconds / responses) if responses else None,
        responses, resolution_seconds, handle_seconds, queue_seconds,
        assignee_id, name(assignee_id, ""), "; ".join(map(names.member, assignees)) if assignees else "",
        name(responder_id, ""), team_id, names.teams.get(team_id, ""),
        category, language, summary, closed_by, name(closer_id, ""), csat, name(csat_agent_id, ""),
        messages_in, messages_out, messages_bot, notes, bot, handed_over, contained, number > 1,
    )  # fmt: skip


# How the five moments leave the database. Formatting them in SQL is what makes 20,000+ rows/s:
# Django's time-zone-aware loader parses each timestamptz in Python (8 µs each, 5 a row).
MOMENT_FIELDS = ("opened_at", "first_message_at", "first_assigned_at", "first_response_at", "closed_at")
AS_DATETIME, AS_ISO, AS_EXCEL = "datetime", "iso", "excel"
_MOMENT_SQL = {
    # ISO 8601 in UTC to the second, e.g. 2026-11-30T14:05:09Z
    AS_ISO: ("to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", CharField()),
    # Excel's serial date (days since 1899-12-30), in UTC
    AS_EXCEL: ("(EXTRACT(EPOCH FROM %(expressions)s) / 86400 + 25569)::float8", FloatField()),
}


def _selected(moments: str) -> list:
    if moments == AS_DATETIME:
        return list(FIELDS)
    template, output_field = _MOMENT_SQL[moments]
    return [
        Func(F(name), template=template, output_field=output_field) if name in MOMENT_FIELDS else name
        for name in FIELDS
    ]


def export_rows(cycles: QuerySet[Cycle], names: Names, *, moments: str = AS_DATETIME) -> Iterator[tuple]:
    """The rows of `cycles`, oldest opening first, from a server-side cursor; moments as aware
    datetimes, ISO 8601 texts (AS_ISO) or Excel serial numbers (AS_EXCEL). Call it inside a
    transaction: PostgreSQL then streams the cursor instead of materialising the whole result
    first (a cursor outside one is declared WITH HOLD), and the file is one consistent snapshot."""
    values = cycles.order_by("opened_at", "id").values_list(*_selected(moments))
    for row in values.iterator(chunk_size=CURSOR_CHUNK):
        yield export_row(row, names)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, e.g. 2026-11-30T14:05:09Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# CSV -------------------------------------------------------------------------------------------


def csv_chunks(rows: Iterable[tuple]) -> Iterator[bytes]:
    """UTF-8 CSV (no BOM) of rows with AS_ISO moments: a header, then CSV_CHUNK rows per piece.
    Booleans are true/false, nothing is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMN_NAMES)
    pending = 0
    for row in rows:
        cells = list(row)
        for index in _BOOLS:
            cells[index] = "true" if cells[index] else "false"
        writer.writerow(cells)
        pending += 1
        if pending == CSV_CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode()


def export_csv_stream(cycles: QuerySet[Cycle], names: Names) -> Iterator[bytes]:
    """The CSV of `cycles`, piece by piece, read in one transaction (see `export_rows`)."""
    with transaction.atomic():
        yield from csv_chunks(export_rows(cycles, names, moments=AS_ISO))


# XLSX ------------------------------------------------------------------------------------------


def xlsx_write(rows: Iterable[tuple], target) -> None:
    """An .xlsx of rows with AS_EXCEL moments into `target` (a path or a binary file), in
    xlsxwriter's constant memory mode: each row goes to disk as soon as the next one starts.
    Moments are UTC date-time cells, texts are always text (a summary starting with "=" is never
    a formula)."""
    import xlsxwriter

    workbook = xlsxwriter.Workbook(target, {"constant_memory": True})
    bold = workbook.add_format({"bold": True})
    moment = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    sheets = 0
    sheet = None
    line = XLSX_MAX_ROWS
    for row in rows:
        if line == XLSX_MAX_ROWS:
            sheets += 1
            sheet = workbook.add_worksheet("conversations" if sheets == 1 else f"conversations {sheets}")
            sheet.write_row(0, 0, COLUMN_NAMES, bold)
            sheet.freeze_panes(1, 0)
            line = 0
        line += 1
        _xlsx_row(sheet, line, row, moment)
    if sheet is None:
        sheet = workbook.add_worksheet("conversations")
        sheet.write_row(0, 0, COLUMN_NAMES, bold)
    workbook.close()


def _xlsx_row(sheet, line: int, row: tuple, moment) -> None:
    for column, ((_, kind), value) in enumerate(zip(COLUMNS, row, strict=True)):
        if value is None or value == "":
            continue
        if kind == TEXT:
            sheet.write_string(line, column, value)
        elif kind == INT:
            sheet.write_number(line, column, value)
        elif kind == MOMENT:
            sheet.write_number(line, column, value, moment)
        else:
            sheet.write_boolean(line, column, value)


def export_xlsx_file(cycles: QuerySet[Cycle], names: Names):
    """The XLSX of `cycles` in an anonymous temporary file (gone once closed), at its start."""
    target = tempfile.TemporaryFile()  # noqa: SIM115 (the caller streams it, then closes it)
    try:
        with transaction.atomic():
            xlsx_write(export_rows(cycles, names, moments=AS_EXCEL), target)
    except BaseException:
        target.close()
        raise
    target.seek(0)
    return target


def export_filename(filters, extension: str) -> str:
    return f"conversations-{filters.workspace.slug}-{filters.start}-{filters.end}.{extension}"


# The scheduled export ----------------------------------------------------------------------------

# A file covers the cycles *closed* in its window, so each cycle lands in exactly one file with its
# final numbers (a reopening is a new cycle, in a later file). The window ends this long before the
# run, so that the folder (every 10 s) has turned every close of the window into its cycle; a run
# waits while events older than the window's end are still unfolded.
EXPORT_SETTLE = timedelta(minutes=5)
FIRST_EXPORT_SPAN = timedelta(days=1)


def export_window(*, last_export_at: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of closings a run at `now` writes: from where the previous run's ended (or a
    day back, for the first one) to EXPORT_SETTLE ago."""
    end = now - EXPORT_SETTLE
    start = last_export_at - EXPORT_SETTLE if last_export_at else end - FIRST_EXPORT_SPAN
    return start, end


def export_path(settings, *, now: datetime) -> str:
    folder = "/".join(part for part in (settings.export_prefix.strip("/"), settings.workspace.slug) if part)
    return f"{folder}/conversations-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{settings.export_format}"


def exports_due(*, now: datetime) -> list:
    from apps.analytics.models import Settings

    enabled = Settings.objects.filter(export_enabled=True).select_related("workspace").order_by("pk")
    return [
        settings
        for settings in enabled
        if settings.last_export_at is None
        or settings.last_export_at <= now - timedelta(minutes=settings.export_every_minutes)
    ]


def _folder_behind(workspace_id: int, end: datetime) -> bool:
    from apps.analytics.models import Event

    return Event.objects.filter(workspace_id=workspace_id, folded=False, at__lt=end).exists()


def _claim(settings, *, now: datetime) -> bool:
    """Takes this run for the workspace: only one of two beats racing here updates the row."""
    from apps.analytics.models import Settings

    claimed = Settings.objects.filter(pk=settings.pk, export_enabled=True)
    if settings.last_export_at is None:
        claimed = claimed.filter(last_export_at__isnull=True)
    else:
        claimed = claimed.filter(last_export_at=settings.last_export_at)
    return claimed.update(last_export_at=now) == 1


def _release(settings, *, now: datetime) -> None:
    """Gives a failed run back, so the next beat writes the same window again."""
    from apps.analytics.models import Settings

    Settings.objects.filter(pk=settings.pk, last_export_at=now).update(last_export_at=settings.last_export_at)


def export_write(settings, *, now: datetime) -> str:
    """Writes the workspace's file for the window ending at `now` to the exports storage; returns
    its name there (the storage may alter it should the name be taken)."""
    from django.core.files import File
    from django.core.files.storage import storages

    start, end = export_window(last_export_at=settings.last_export_at, now=now)
    cycles = Cycle.objects.filter(workspace=settings.workspace, closed_at__gte=start, closed_at__lt=end)
    names = names_of(settings.workspace)
    if settings.export_format == "xlsx":
        content = export_xlsx_file(cycles, names)
    else:
        content = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
        for chunk in export_csv_stream(cycles, names):
            content.write(chunk)
        content.seek(0)
    with content:  # written to a local file first: the storage (S3) uploads a file, not a stream
        name = storages["exports"].save(export_path(settings, now=now), File(content))
    export_audit(
        workspace_id=settings.workspace_id,
        described=f"Scheduled export {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({settings.export_format})",
        details={"format": settings.export_format, "scheduled": True, "file": name},
    )
    return name


def export_audit(*, workspace_id: int, described: str, details: dict, request=None) -> None:
    """The audit log's entry for an export of the conversations report: who (the signed-in person,
    the API token, or nobody for the schedule), which range and filters, which file."""
    from apps.workspaces.models import AuditEntry
    from apps.workspaces.services import audit_record

    audit_record(
        action=AuditEntry.Action.EXPORT,
        workspace_id=workspace_id,
        object_type="report",
        object_repr=described,
        details=details,
        request=request,
    )


def exports_run_due(*, now: datetime) -> int:
    """Writes every due workspace's scheduled export (beat calls this every minute); returns how
    many files were written. Safe to run twice at once: each workspace's run is claimed first."""
    written = 0
    for settings in exports_due(now=now):
        _, end = export_window(last_export_at=settings.last_export_at, now=now)
        if _folder_behind(settings.workspace_id, end):
            logger.warning("export of %s waits for the folder to catch up", settings.workspace.slug)
            continue
        if not _claim(settings, now=now):
            continue
        try:
            name = export_write(settings, now=now)
        except Exception:
            _release(settings, now=now)
            logger.exception("export of %s failed; the next run tries the same window", settings.workspace.slug)
            continue
        logger.info("exported %s to %s", settings.workspace.slug, name)
        written += 1
    return written
