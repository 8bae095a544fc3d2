"""Excluded days of a schedule (given dates and a region's public holidays) and their Temporal form.

Quartz's HolidayCalendar is the model: an excluded day is a whole local day in the schedule's time zone,
and no fire happens on it. Temporal matches a spec's `skip` calendars on the local clock of the spec's
zone, so each excluded day becomes part of a skip calendar covering 00:00:00-23:59:59. Holidays come from
the `holidays` package; a spec lists them for a bounded span of years (`HOLIDAY_YEARS`), which the
reconcile pass renews when a new year starts (docs/cron.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from functools import lru_cache

from temporalio.client import ScheduleCalendarSpec, ScheduleRange

# The years after the current one whose holidays a spec lists: a spec made on 2027-12-31 still covers 2029.
HOLIDAY_YEARS = 2
_WHOLE_DAY = {
    "second": (ScheduleRange(0, 59),),
    "minute": (ScheduleRange(0, 59),),
    "hour": (ScheduleRange(0, 23),),
}


@lru_cache(maxsize=1)
def _regions() -> dict[str, frozenset[str]]:
    import holidays  # a second to import under load: only processes that meet an `exclude` pay it

    return {country: frozenset(subdivs) for country, subdivs in holidays.list_supported_countries().items()}


def region_error(code: str) -> str | None:
    """Why `code` names no holiday calendar ("US", "DE-BY": a country, then optionally a subdivision),
    or None when it does."""
    country, _, subdivision = code.partition("-")
    subdivisions = _regions().get(country)
    if subdivisions is None:
        return f"unknown country {country!r}; use an ISO 3166-1 alpha-2 code the holidays package knows"
    if subdivision and subdivision not in subdivisions:
        known = ", ".join(sorted(subdivisions)) or "none"
        return f"unknown subdivision {subdivision!r} of {country} (known: {known})"
    return None


@lru_cache(maxsize=512)
def holidays_of(code: str, year: int) -> dict[date, str]:
    """The public holidays of region `code` in `year`, each with its name(s): "Christmas Day"."""
    import holidays  # as in _regions

    country, _, subdivision = code.partition("-")
    found = holidays.country_holidays(country, subdiv=subdivision or None, years=year, language="en_US")
    return {day: "; ".join(found.get_list(day)) for day in sorted(found)}


def excluded_days(dates: Iterable[date], region: str | None, years: range) -> dict[date, str]:
    """The days excluded in `years`: the region's holidays by name, the given dates as "excluded date"."""
    days = {day: "excluded date" for day in dates if day.year in years}
    for year in years if region else ():
        assert region is not None
        for day, name in holidays_of(region, year).items():
            days[day] = name if day not in days else f"{name}; excluded date"
    return dict(sorted(days.items()))


def skip_calendars(days: Iterable[date], comment: str) -> list[ScheduleCalendarSpec]:
    """Whole days as Temporal skip calendars, one per month that has any (so a year of holidays costs
    about ten calendars, not one per day)."""
    by_month: dict[tuple[int, int], set[int]] = defaultdict(set)
    for day in days:
        by_month[day.year, day.month].add(day.day)
    return [
        ScheduleCalendarSpec(
            **_WHOLE_DAY,
            day_of_month=tuple(ScheduleRange(d) for d in sorted(month_days)),
            month=(ScheduleRange(month),),
            year=(ScheduleRange(year),),
            comment=comment,
        )
        for (year, month), month_days in sorted(by_month.items())
    ]
