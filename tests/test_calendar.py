"""Node calendars: working days, cutoffs and pickup times in the node's own time zone."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.calendar import NodeCalendar, ShipWindow
from engine.core.errors import InvalidArgument
from engine.core.network import node_violations
from engine.core.types import Capability, Node, NodeType


def at(text: str, zone: str) -> float:
    """Epoch seconds of a local wall time, e.g. at("2024-06-14 15:30", "Europe/Paris")."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def d(text: str) -> int:
    return date.fromisoformat(text).toordinal()


def calendar(**fields_: object) -> NodeCalendar:
    return NodeCalendar(Node("n1", **fields_))  # type: ignore[arg-type]


# 2024-06-10 is a Monday; 2024-06-14 a Friday.


def test_before_cutoff_ships_today_after_cutoff_the_next_working_day():
    cal = calendar(time_zone="Europe/Paris", cutoff="14:00")
    assert cal.ship_window(at("2024-06-11 13:59", "Europe/Paris")).ship_day == d("2024-06-11")
    assert cal.ship_window(at("2024-06-11 14:00", "Europe/Paris")).ship_day == d("2024-06-12")


def test_friday_after_cutoff_rolls_over_the_weekend():
    cal = calendar(time_zone="Europe/Paris")
    assert cal.release_day(at("2024-06-14 16:00", "Europe/Paris")) == d("2024-06-17")


def test_a_closed_day_releases_on_the_next_opening_day():
    # A store open Tuesday to Saturday: an order on Sunday or Monday waits for Tuesday.
    cal = calendar(time_zone="America/New_York", open_weekdays=(2, 3, 4, 5, 6))
    assert cal.release_day(at("2024-06-09 10:00", "America/New_York")) == d("2024-06-11")
    assert cal.release_day(at("2024-06-10 08:00", "America/New_York")) == d("2024-06-11")
    assert cal.release_day(at("2024-06-15 08:00", "America/New_York")) == d("2024-06-15")


def test_a_holiday_is_skipped():
    cal = calendar(time_zone="America/New_York", holidays=("2024-07-04", "2024-07-05"))
    # Wednesday after cutoff: Thursday and Friday are holidays, so Monday.
    assert cal.release_day(at("2024-07-03 15:00", "America/New_York")) == d("2024-07-08")
    assert cal.is_working_day(d("2024-07-03"))
    assert not cal.is_working_day(d("2024-07-04"))


def test_processing_days_count_working_days_only():
    cal = calendar(time_zone="UTC", processing_days=2, holidays=("2024-06-17",))
    # Released Friday 14th; +2 working days skips the weekend and Monday's holiday.
    assert cal.ship_window(at("2024-06-14 09:00", "UTC")).ship_day == d("2024-06-19")


def test_auckland_orders_belong_to_the_local_day_not_the_utc_one():
    cal = calendar(time_zone="Pacific/Auckland", cutoff="14:00")
    # Sunday 22:00 UTC is Monday 10:00 in Auckland (NZST, UTC+12): before cutoff.
    sunday_utc = datetime(2024, 6, 9, 22, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cal.release_day(sunday_utc) == d("2024-06-10")
    # Monday 02:30 UTC is Monday 14:30 in Auckland: after cutoff, so Tuesday,
    # even though in UTC it is only early Monday.
    monday_utc = datetime(2024, 6, 10, 2, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cal.release_day(monday_utc) == d("2024-06-11")


def test_los_angeles_evening_is_already_tomorrow_in_utc():
    cal = calendar(time_zone="America/Los_Angeles", cutoff="17:00")
    # Tuesday 00:30 UTC = Monday 17:30 PDT: after Monday's cutoff -> Tuesday.
    instant = datetime(2024, 6, 11, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cal.release_day(instant) == d("2024-06-11")
    # Monday 23:30 UTC = Monday 16:30 PDT: before cutoff -> Monday.
    instant = datetime(2024, 6, 10, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cal.release_day(instant) == d("2024-06-10")


def test_cutoff_follows_the_clocks_on_a_spring_forward_day():
    # 2024-03-10: Los Angeles moves from PST (UTC-8) to PDT (UTC-7) at 02:00.
    cal = calendar(time_zone="America/Los_Angeles", cutoff="14:00", open_weekdays=(1, 2, 3, 4, 5, 6, 7))
    cutoff = cal.at(d("2024-03-10"), cal.cutoff)
    assert cutoff == datetime(2024, 3, 10, 21, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    # 21:30 UTC is 14:30 PDT: after cutoff (with a fixed PST offset it would
    # wrongly be 13:30, before it).
    late = datetime(2024, 3, 10, 21, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert cal.release_day(late) == d("2024-03-11")
    # The day before, the same 14:00 cutoff is 22:00 UTC.
    assert (
        cal.at(d("2024-03-09"), cal.cutoff) == datetime(2024, 3, 9, 22, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    )


def test_cutoff_follows_the_clocks_on_a_fall_back_day():
    # 2024-11-03: Los Angeles returns to PST at 02:00.
    cal = calendar(time_zone="America/Los_Angeles", cutoff="14:00", open_weekdays=(1, 2, 3, 4, 5, 6, 7))
    assert (
        cal.at(d("2024-11-03"), cal.cutoff)
        == datetime(2024, 11, 3, 22, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    )
    assert (
        cal.at(d("2024-11-02"), cal.cutoff)
        == datetime(2024, 11, 2, 21, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    )


def test_a_cutoff_inside_the_dst_gap_is_read_in_the_old_offset():
    # 02:30 does not exist on 2024-03-10 in Los Angeles; it means 03:30 PDT.
    cal = calendar(time_zone="America/Los_Angeles", cutoff="02:30", open_weekdays=(1, 2, 3, 4, 5, 6, 7))
    assert (
        cal.at(d("2024-03-10"), cal.cutoff)
        == datetime(2024, 3, 10, 10, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    )


def test_the_ship_window_is_shorter_on_a_dst_day_in_auckland():
    # 2024-04-07: Auckland leaves NZDT (UTC+13) for NZST (UTC+12) at 03:00: a 25-hour Sunday.
    cal = calendar(time_zone="Pacific/Auckland", open_weekdays=(1, 2, 3, 4, 5, 6, 7), cutoff="23:59")
    w = cal.ship_window(at("2024-04-07 12:00", "Pacific/Auckland"))
    assert w.release_day == d("2024-04-07")
    assert w.valid_until - w.valid_from == 25 * 3600 - 60


def test_ship_window_contains_the_instant_and_ends_at_cutoff_or_midnight():
    cal = calendar(time_zone="Europe/Berlin", cutoff="15:00")
    now = at("2024-06-12 10:00", "Europe/Berlin")
    w = cal.ship_window(now)
    assert w == ShipWindow(
        at("2024-06-12 00:00", "Europe/Berlin"),
        at("2024-06-12 15:00", "Europe/Berlin"),
        d("2024-06-12"),
        d("2024-06-12"),
        d("2024-06-13"),
    )
    later = cal.ship_window(at("2024-06-12 16:00", "Europe/Berlin"))
    assert later.valid_from == at("2024-06-12 15:00", "Europe/Berlin")
    assert later.valid_until == at("2024-06-13 00:00", "Europe/Berlin")
    assert later.ship_day == d("2024-06-13")


_ZONES = [
    "UTC",
    "Pacific/Auckland",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Kolkata",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "America/Santiago",
]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(_ZONES),
    cutoff=st.sampled_from(["00:00", "02:30", "12:00", "14:00", "23:59"]),
    weekdays=st.sets(st.integers(1, 7), min_size=1).map(lambda s: tuple(sorted(s))),
    instant=st.floats(1_700_000_000, 1_800_000_000),
    fraction=st.floats(0, 1, exclude_max=True),
)
def test_the_ship_window_answer_holds_throughout_the_window(zone, cutoff, weekdays, instant, fraction):
    """Caching a window is safe: any instant inside it gets the same answer."""
    cal = calendar(time_zone=zone, cutoff=cutoff, open_weekdays=weekdays)
    w = cal.ship_window(instant)
    assert w.valid_from <= instant < w.valid_until
    # The window is half-open: rounding must not land the probe on its end.
    inside = min(w.valid_from + (w.valid_until - w.valid_from) * fraction, math.nextafter(w.valid_until, 0.0))
    other = cal.ship_window(inside)
    assert (other.release_day, other.ship_day, other.ship_day_when_full) == (
        w.release_day,
        w.ship_day,
        w.ship_day_when_full,
    )
    assert cal.release_day(inside) == w.release_day
    assert cal.is_working_day(w.release_day)


def test_pickup_is_ready_after_the_pick_time_once_the_store_is_open():
    cal = calendar(time_zone="Europe/Paris", opens_at="09:00", cutoff="18:00", pickup_minutes=90)
    # During opening hours: now + 90 minutes.
    assert cal.pickup_ready_at(at("2024-06-11 10:00", "Europe/Paris")) == at(
        "2024-06-11 11:30", "Europe/Paris"
    )
    # Before opening: opening + 90 minutes.
    assert cal.pickup_ready_at(at("2024-06-11 07:00", "Europe/Paris")) == at(
        "2024-06-11 10:30", "Europe/Paris"
    )
    # After cutoff: next working day, from opening.
    assert cal.pickup_ready_at(at("2024-06-11 19:00", "Europe/Paris")) == at(
        "2024-06-12 10:30", "Europe/Paris"
    )
    # Saturday at a Monday-to-Friday store: Monday.
    assert cal.pickup_ready_at(at("2024-06-15 11:00", "Europe/Paris")) == at(
        "2024-06-17 10:30", "Europe/Paris"
    )


def test_a_full_node_starts_one_working_day_later():
    cal = calendar(time_zone="UTC")
    now = at("2024-06-14 09:00", "UTC")  # a Friday
    assert cal.release_day(now) == d("2024-06-14")
    assert cal.release_day(now, full=True) == d("2024-06-17")
    assert cal.ship_window(now).ship_day_when_full == d("2024-06-17")
    assert cal.pickup_ready_at(now, full=True) == at("2024-06-17 11:00", "UTC")


def test_transfers_are_ready_on_the_first_working_day_of_arrival():
    cal = calendar(time_zone="UTC", pickup_minutes=60)
    assert cal.ready_on_arrival(d("2024-06-15")) == at("2024-06-17 10:00", "UTC")  # Saturday -> Monday


def test_bad_calendar_fields_are_reported_together():
    node = Node(
        "n1",
        time_zone="Mars/Olympus",
        cutoff="25:00",
        opens_at="9am",
        open_weekdays=(0, 3, 3),
        holidays=("2024-02-30", "tomorrow"),
        processing_days=-1,
        pickup_minutes=10**9,
        daily_capacity=0,
        capabilities=64,  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidArgument) as info:
        NodeCalendar(node)
    fields_ = {v.field for v in info.value.violations}
    assert fields_ == {
        "node.time_zone",
        "node.cutoff",
        "node.opens_at",
        "node.open_weekdays[0]",
        "node.open_weekdays[2]",
        "node.holidays[0]",
        "node.holidays[1]",
        "node.processing_days",
        "node.pickup_minutes",
    }
    all_fields = {v.field for v in node_violations(node)}
    assert {"node.daily_capacity", "node.capabilities"} <= all_fields


def test_a_node_without_working_days_is_refused():
    with pytest.raises(InvalidArgument):
        NodeCalendar(Node("n1", open_weekdays=()))


def test_node_defaults_keep_old_code_working_and_survive_a_json_round_trip():
    node = Node("dc1", type=NodeType.DC, holidays=("2024-12-25",), open_weekdays=(1, 2, 3, 4, 5, 6))
    assert node.effective_capabilities == Capability.SHIP
    assert Node("s1").effective_capabilities == Capability.PICKUP | Capability.SHIP_FROM_STORE
    # The embedded store persists nodes field by field as JSON.
    data = json.loads(json.dumps({f.name: getattr(node, f.name) for f in fields(Node)}))
    back = Node(**{**data, "type": NodeType(data["type"])})
    assert back == node
    assert hash(back) == hash(node)
    explicit = Node("s2", capabilities=Capability.PICKUP)
    data = json.loads(json.dumps({f.name: getattr(explicit, f.name) for f in fields(Node)}))
    assert Node(**{**data, "type": NodeType(data["type"])}).capabilities is Capability.PICKUP


def test_working_day_search_is_bounded():
    # Holidays every day for years: an error, not an endless loop.
    start = date(2024, 1, 1)
    holidays = tuple((start + timedelta(days=i)).isoformat() for i in range(3 * 366 + 10))
    cal = calendar(time_zone="UTC", holidays=holidays)
    with pytest.raises(InvalidArgument):
        cal.next_working_day(start.toordinal())
