"""Working days, order cutoffs and pickup times of one node, in its own time zone.

Times are epoch seconds (what the injected clock returns); days are proleptic
Gregorian ordinals (``date.toordinal()``), so day arithmetic is integer
arithmetic and the Cython sourcing loop can keep days in C ints.

Every wall-clock time of a node (cutoff, opening) is turned into an instant
through ``zoneinfo`` for that very date, so a DST change moves the instant
with the clocks: a 14:00 cutoff is 14:00 local on both sides of the change.
Wall times that do not exist on a spring-forward day are read with the offset
in force before the change (02:30 becomes 03:30 new time, as a clock-watching
human would do); wall times that happen twice on a fall-back day mean the
first occurrence (PEP 495, ``fold=0``).

The one question the sourcing loop asks per node and order, "which day would
this parcel leave?", has the same answer for hours at a time: it only changes
at local midnight and at the cutoff. :meth:`NodeCalendar.ship_window` returns
that answer with the interval of instants it holds for, so callers cache it
and compute again only when the clock leaves the interval.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.core.errors import FieldViolation, InvalidArgument
from engine.core.types import Node

__all__ = [
    "MAX_PICKUP_MINUTES",
    "MAX_PROCESSING_DAYS",
    "NodeCalendar",
    "ShipWindow",
    "calendar_violations",
    "day_of",
    "load_zone",
    "parse_hhmm",
]

MAX_PROCESSING_DAYS = 60
MAX_PICKUP_MINUTES = 7 * 24 * 60
# No working day within three years means the calendar is wrong; searching on
# would only hide that (and could loop forever on an all-holiday calendar).
_MAX_SEARCH_DAYS = 3 * 366

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_MIDNIGHT = time(0, 0)


class ShipWindow(NamedTuple):
    """When an order placed at an instant in ``[valid_from, valid_until)`` leaves the node."""

    valid_from: float
    valid_until: float
    release_day: int  # the day the node starts on the order
    ship_day: int  # the day the parcel leaves (release day + processing days)
    ship_day_when_full: int  # the same when today's capacity is used up


def parse_hhmm(text: str) -> time:
    """``"HH:MM"`` (24-hour clock) to a time; ValueError otherwise."""
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"expected HH:MM (00:00..23:59), got {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone; ValueError naming it when the system has no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def day_of(instant: float, zone: ZoneInfo) -> int:
    """The local date (as an ordinal) of an instant in a zone."""
    return datetime.fromtimestamp(instant, zone).toordinal()


def calendar_violations(node: Node, prefix: str = "node") -> list[FieldViolation]:
    """Everything wrong with a node's calendar fields, each with its field path."""
    v: list[FieldViolation] = []
    try:
        load_zone(node.time_zone)
    except ValueError as exc:
        v.append(FieldViolation(f"{prefix}.time_zone", str(exc)))
    for name in ("cutoff", "opens_at"):
        try:
            parse_hhmm(getattr(node, name))
        except (ValueError, TypeError):
            v.append(FieldViolation(f"{prefix}.{name}", "must be a local time HH:MM (00:00..23:59)"))
    weekdays = node.open_weekdays
    if not weekdays:
        v.append(FieldViolation(f"{prefix}.open_weekdays", "at least one working weekday is required"))
    seen: set[int] = set()
    for i, day in enumerate(weekdays):
        if type(day) is not int or not 1 <= day <= 7:
            v.append(
                FieldViolation(
                    f"{prefix}.open_weekdays[{i}]", "must be an ISO weekday 1 (Monday)..7 (Sunday)"
                )
            )
        elif day in seen:
            v.append(FieldViolation(f"{prefix}.open_weekdays[{i}]", f"repeats weekday {day}"))
        else:
            seen.add(day)
    for i, holiday in enumerate(node.holidays):
        try:
            date.fromisoformat(holiday)
            ok = len(holiday) == 10
        except (ValueError, TypeError):
            ok = False
        if not ok:
            v.append(FieldViolation(f"{prefix}.holidays[{i}]", "must be an ISO date YYYY-MM-DD"))
    if type(node.processing_days) is not int or not 0 <= node.processing_days <= MAX_PROCESSING_DAYS:
        v.append(FieldViolation(f"{prefix}.processing_days", f"must be 0..{MAX_PROCESSING_DAYS}"))
    if type(node.pickup_minutes) is not int or not 0 <= node.pickup_minutes <= MAX_PICKUP_MINUTES:
        v.append(FieldViolation(f"{prefix}.pickup_minutes", f"must be 0..{MAX_PICKUP_MINUTES}"))
    return v


class NodeCalendar:
    """The calendar of one node, compiled once from its :class:`Node` fields."""

    __slots__ = (
        "node_id",
        "zone",
        "cutoff",
        "opens",
        "weekday_mask",
        "holidays",
        "processing_days",
        "pickup_seconds",
    )

    def __init__(self, node: Node, prefix: str = "node") -> None:
        violations = calendar_violations(node, prefix)
        if violations:
            first = violations[0]
            raise InvalidArgument(f"{first.field} {first.description}", tuple(violations))
        self.node_id = node.id
        self.zone = load_zone(node.time_zone)
        self.cutoff = parse_hhmm(node.cutoff)
        self.opens = parse_hhmm(node.opens_at)
        # Bit (ISO weekday - 1): the same mask the carriers use for delivery days.
        self.weekday_mask = sum(1 << (d - 1) for d in node.open_weekdays)
        self.holidays = frozenset(date.fromisoformat(h).toordinal() for h in node.holidays)
        self.processing_days = node.processing_days
        self.pickup_seconds = node.pickup_minutes * 60.0

    # ----------------------------------------------------------------- days

    def is_working_day(self, day: int) -> bool:
        # Ordinal 1 (0001-01-01) was a Monday.
        return bool(self.weekday_mask >> ((day - 1) % 7) & 1) and day not in self.holidays

    def next_working_day(self, day: int) -> int:
        """``day`` itself when the node works then, else the first working day after it."""
        for d in range(day, day + _MAX_SEARCH_DAYS):
            if self.is_working_day(d):
                return d
        raise InvalidArgument(
            f"node {self.node_id!r} has no working day within {_MAX_SEARCH_DAYS} days",
            (FieldViolation("node.holidays", "leave at least one working day"),),
        )

    def add_working_days(self, day: int, n: int) -> int:
        """The ``n``-th working day after ``day`` (``day`` itself, made a working day, for 0)."""
        d = self.next_working_day(day)
        for _ in range(n):
            d = self.next_working_day(d + 1)
        return d

    def local_day(self, instant: float) -> int:
        return day_of(instant, self.zone)

    def at(self, day: int, wall: time) -> float:
        """The instant of a local wall time on a local date (see the module doc for DST)."""
        return datetime.combine(date.fromordinal(day), wall, tzinfo=self.zone).timestamp()

    # -------------------------------------------------------------- orders

    def release_day(self, instant: float, *, full: bool = False) -> int:
        """The day the node starts on an order placed at ``instant``.

        Today when today is a working day and the order beats the cutoff;
        otherwise the next working day. A node whose capacity is used up
        today (``full``) starts one working day later than that.
        """
        day = self.local_day(instant)
        if self.is_working_day(day) and instant < self.at(day, self.cutoff):
            release = day
        else:
            release = self.next_working_day(day + 1)
        if full:
            release = self.next_working_day(release + 1)
        return release

    def ship_window(self, instant: float) -> ShipWindow:
        """The ship day of an order placed at ``instant``, and how long that answer holds."""
        day = self.local_day(instant)
        start = self.at(day, _MIDNIGHT)
        end = self.at(day + 1, _MIDNIGHT)
        if self.is_working_day(day):
            cut = self.at(day, self.cutoff)
            if instant < cut:
                release, valid_from, valid_until = day, start, cut
            else:
                release, valid_from, valid_until = self.next_working_day(day + 1), cut, end
        else:
            release, valid_from, valid_until = self.next_working_day(day + 1), start, end
        # Zones whose midnight falls in a DST gap (or repeats) can put the
        # computed bounds a hair off; the window must contain the instant asked.
        valid_from = min(valid_from, instant)
        if valid_until <= instant:
            valid_until = math.nextafter(instant, math.inf)
        full_release = self.next_working_day(release + 1)
        return ShipWindow(
            valid_from,
            valid_until,
            release,
            self.add_working_days(release, self.processing_days),
            self.add_working_days(full_release, self.processing_days),
        )

    def pickup_ready_at(self, instant: float, *, full: bool = False) -> float:
        """When a click & collect order placed at ``instant`` is ready at this store.

        Released today: preparation starts now (or at opening, if earlier);
        released on a later day: it starts at that day's opening.
        """
        release = self.release_day(instant, full=full)
        opening = self.at(release, self.opens)
        start = max(instant, opening) if release == self.local_day(instant) else opening
        return start + self.pickup_seconds

    def ready_on_arrival(self, arrival_day: int) -> float:
        """When stock arriving at this store on ``arrival_day`` is ready for pickup.

        A transfer is unloaded on the first working day at or after its
        arrival and prepared from opening time.
        """
        day = self.next_working_day(arrival_day)
        return self.at(day, self.opens) + self.pickup_seconds

    def local_datetime(self, instant: float) -> datetime:
        return datetime.fromtimestamp(instant, self.zone)

    def __repr__(self) -> str:
        return f"NodeCalendar({self.node_id!r}, {self.zone.key})"
