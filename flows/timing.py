"""When a step may go: its anchor plus delay, then the shop's sending rules. Pure functions."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.core import get_global

QUIET_HOURS_FORMAT = "HH:MM-HH:MM"


class TimingError(ValueError):
    """A quiet-hours or time-zone setting that cannot be used; the message says why."""


def parse_quiet_hours(text: str) -> tuple[time, time]:
    """'21:00-08:00' → (21:00, 08:00). A window may cross midnight; equal ends are refused."""
    start_text, separator, end_text = text.strip().partition("-")
    try:
        start = time.fromisoformat(start_text.strip())
        end = time.fromisoformat(end_text.strip())
    except ValueError:
        raise TimingError(f"{text!r} is not quiet hours like 21:00-08:00") from None
    if not separator or start == end:
        raise TimingError(f"{text!r} is not quiet hours like 21:00-08:00")
    return start, end


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimingError(f"{name!r} is not a time zone like Europe/Stockholm") from None
    return name


def quiet_until(moment: datetime, quiet_hours: str | None, timezone: str | None) -> datetime | None:
    """The end of the quiet window `moment` falls in, in UTC; None when it falls outside."""
    if not quiet_hours:
        return None
    start, end = parse_quiet_hours(quiet_hours)
    local = moment.astimezone(zone(timezone))
    now = local.time()
    inside = start <= now or now < end if start > end else start <= now < end
    if not inside:
        return None
    day = local.date() if now < end else local.date() + timedelta(days=1)
    wake = datetime.combine(day, end, tzinfo=local.tzinfo)
    return wake.astimezone(moment.tzinfo)


def after_cap(
    last_sent: datetime | None, cap_seconds: int | None, now: datetime
) -> datetime | None:
    """When smart sending lets the next marketing email go; None when it may go now."""
    if last_sent is None or not cap_seconds:
        return None
    free = last_sent + timedelta(seconds=cap_seconds)
    return free if free > now else None


def country_zone(country: str | None, moment: datetime) -> str | None:
    """The time zone of a country that keeps one clock (Sweden, Germany, Iceland…), from the
    CLDR data Babel ships; None where zones differ now (the US, Russia) or it is unknown."""
    if not country:
        return None
    names = get_global("territory_zones").get(country.upper(), [])
    offsets = {moment.astimezone(ZoneInfo(name)).utcoffset() for name in names}
    return names[0] if len(offsets) == 1 else None
