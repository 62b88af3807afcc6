"""Shifts and business hours are read in the workspace's time zone. Cairo is UTC+2 with no
daylight saving in November 2026, and 2 November 2026 is a Monday."""

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from apps.workspaces.models import ShiftException, validate_business_hours
from apps.workspaces.selectors import team_is_on_shift, workspace_is_open
from tests.factories import make_shift, make_team, make_workspace

pytestmark = pytest.mark.django_db

CAIRO = ZoneInfo("Africa/Cairo")
MONDAY = date(2026, 11, 2)
TUESDAY = date(2026, 11, 3)
SATURDAY = date(2026, 11, 7)


def utc(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def cairo(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=CAIRO)


@pytest.fixture
def team():
    return make_team(make_workspace(timezone="Africa/Cairo"))


def test_the_calendar_the_tests_rely_on():
    assert MONDAY.weekday() == 0
    assert cairo(MONDAY, 10).utcoffset().total_seconds() == 2 * 3600


# team_is_on_shift -----------------------------------------------------------------------------


def test_a_team_without_shifts_works_around_the_clock_except_on_its_holidays(team):
    from apps.workspaces.models import ShiftException

    assert team_is_on_shift(team=team, at=cairo(MONDAY, 3)) is True
    ShiftException.objects.create(workspace=team.workspace, team=team, date=cairo(MONDAY, 3).date(), closed=True)
    assert team_is_on_shift(team=team, at=cairo(MONDAY, 3)) is False
    assert team_is_on_shift(team=team, at=cairo(TUESDAY, 3)) is True


def test_day_shift_is_on_at_local_morning(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))

    assert team_is_on_shift(team=team, at=utc(MONDAY, 8)) is True  # 10:00 in Cairo


def test_day_shift_is_off_after_local_end_though_utc_is_still_within_it(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))

    assert team_is_on_shift(team=team, at=utc(MONDAY, 16)) is False  # 18:00 in Cairo


def test_day_shift_starts_at_its_local_start_and_ends_before_its_local_end(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))

    assert team_is_on_shift(team=team, at=cairo(MONDAY, 8, 59)) is False
    assert team_is_on_shift(team=team, at=cairo(MONDAY, 9)) is True
    assert team_is_on_shift(team=team, at=cairo(MONDAY, 16, 59)) is True
    assert team_is_on_shift(team=team, at=cairo(MONDAY, 17)) is False


def test_day_shift_is_off_on_other_weekdays(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))

    assert team_is_on_shift(team=team, at=cairo(TUESDAY, 10)) is False


def test_overnight_shift_is_still_on_early_next_morning(team):
    make_shift(team, weekday=0, starts_at=time(22), ends_at=time(6))

    assert team_is_on_shift(team=team, at=cairo(TUESDAY, 3)) is True
    assert team_is_on_shift(team=team, at=utc(TUESDAY, 1)) is True  # 03:00 in Cairo


def test_overnight_shift_is_on_late_on_its_own_day_and_off_after_it_ends(team):
    make_shift(team, weekday=0, starts_at=time(22), ends_at=time(6))

    assert team_is_on_shift(team=team, at=cairo(MONDAY, 23)) is True
    assert team_is_on_shift(team=team, at=cairo(MONDAY, 3)) is False
    assert team_is_on_shift(team=team, at=cairo(TUESDAY, 6)) is False


def test_closed_exception_turns_an_on_shift_time_off(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))
    ShiftException.objects.create(workspace=team.workspace, team=team, date=MONDAY, closed=True, reason="Holiday")

    assert team_is_on_shift(team=team, at=utc(MONDAY, 8)) is False


def test_closed_exception_on_the_first_day_also_stops_the_overnight_part(team):
    make_shift(team, weekday=0, starts_at=time(22), ends_at=time(6))
    ShiftException.objects.create(workspace=team.workspace, team=team, date=MONDAY, closed=True)

    assert team_is_on_shift(team=team, at=cairo(TUESDAY, 3)) is False


def test_exception_with_special_hours_turns_an_off_time_on(team):
    ShiftException.objects.create(
        workspace=team.workspace,
        team=team,
        date=SATURDAY,
        closed=False,
        starts_at=time(10),
        ends_at=time(14),
        reason="Sale day",
    )

    assert team_is_on_shift(team=team, at=cairo(SATURDAY, 11)) is True
    assert team_is_on_shift(team=team, at=cairo(SATURDAY, 15)) is False


def test_exception_with_special_hours_replaces_the_regular_shift(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))
    ShiftException.objects.create(
        workspace=team.workspace,
        team=team,
        date=MONDAY,
        closed=False,
        starts_at=time(12),
        ends_at=time(20),
    )

    assert team_is_on_shift(team=team, at=cairo(MONDAY, 10)) is False
    assert team_is_on_shift(team=team, at=cairo(MONDAY, 19)) is True


def test_exception_on_another_team_does_not_apply(team):
    make_shift(team, weekday=0, starts_at=time(9), ends_at=time(17))
    other = make_team(team.workspace)
    ShiftException.objects.create(workspace=team.workspace, team=other, date=MONDAY, closed=True)

    assert team_is_on_shift(team=team, at=cairo(MONDAY, 10)) is True


# workspace_is_open ----------------------------------------------------------------------------


def test_workspace_opens_at_its_local_business_hours():
    workspace = make_workspace(timezone="Africa/Cairo")  # default hours: Mon to Fri, 09:00 to 18:00

    assert workspace_is_open(workspace=workspace, at=utc(MONDAY, 6, 30)) is False  # 08:30
    assert workspace_is_open(workspace=workspace, at=utc(MONDAY, 7, 30)) is True  # 09:30
    assert workspace_is_open(workspace=workspace, at=utc(MONDAY, 15, 30)) is True  # 17:30
    assert workspace_is_open(workspace=workspace, at=utc(MONDAY, 16, 30)) is False  # 18:30


def test_workspace_is_closed_on_a_day_without_intervals():
    workspace = make_workspace(timezone="Africa/Cairo")

    assert workspace_is_open(workspace=workspace, at=cairo(SATURDAY, 12)) is False


def test_workspace_honours_custom_business_hours_with_a_lunch_break():
    workspace = make_workspace(timezone="Africa/Cairo")
    workspace.business_hours = {"sat": [["10:00", "13:00"], ["14:00", "16:00"]]}
    workspace.save(update_fields=["business_hours"])

    assert workspace_is_open(workspace=workspace, at=cairo(SATURDAY, 12)) is True
    assert workspace_is_open(workspace=workspace, at=cairo(SATURDAY, 13, 30)) is False
    assert workspace_is_open(workspace=workspace, at=cairo(SATURDAY, 15)) is True
    assert workspace_is_open(workspace=workspace, at=cairo(MONDAY, 12)) is False


def test_workspace_day_follows_its_time_zone_not_utc():
    workspace = make_workspace(timezone="Africa/Cairo")
    workspace.business_hours = {"tue": [["00:00", "02:00"]]}
    workspace.save(update_fields=["business_hours"])

    # 23:00 UTC on Monday is already 01:00 on Tuesday in Cairo.
    assert workspace_is_open(workspace=workspace, at=utc(MONDAY, 23)) is True


# validate_business_hours ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hours",
    [
        {"mon": [["09:00", "18:00"]], "sun": []},
        {day: [] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        {"fri": [["09:00", "12:00"], ["13:00", "17:30"]]},
        {},
    ],
)
def test_validate_business_hours_accepts_well_formed_hours(hours):
    validate_business_hours(hours)


@pytest.mark.parametrize(
    "hours",
    [
        pytest.param({"funday": [["09:00", "18:00"]]}, id="unknown-day"),
        pytest.param({"Mon": [["09:00", "18:00"]]}, id="capitalised-day"),
        pytest.param({"mon": [["18:00", "09:00"]]}, id="ends-before-it-starts"),
        pytest.param({"mon": [["09:00", "09:00"]]}, id="empty-interval"),
        pytest.param({"mon": [["nine", "five"]]}, id="not-a-time"),
        pytest.param({"mon": [["09:00"]]}, id="half-an-interval"),
        pytest.param({"mon": [["09:00", "12:00", "18:00"]]}, id="three-times"),
        pytest.param({"mon": [[9, 18]]}, id="numbers"),
        pytest.param({"mon": ["09:00-18:00"]}, id="interval-as-string"),
        pytest.param({"mon": "09:00-18:00"}, id="day-as-string"),
        pytest.param({"mon": None}, id="day-as-null"),
        pytest.param([["09:00", "18:00"]], id="not-a-mapping"),
        pytest.param("mon 09:00-18:00", id="a-string"),
    ],
)
def test_validate_business_hours_rejects_bad_shapes(hours):
    with pytest.raises(ValidationError):
        validate_business_hours(hours)


def test_workspace_full_clean_rejects_bad_business_hours():
    workspace = make_workspace()
    workspace.business_hours = {"mon": [["18:00", "09:00"]]}

    with pytest.raises(ValidationError) as caught:
        workspace.full_clean()

    assert "business_hours" in caught.value.message_dict
