"""Durations as people write and read them: `parse_duration("6h")`, `human_duration(11400)`
-> "3 h 10 min". Pure, no imports beyond the standard library.
"""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(min|[smhd])?")


def parse_duration(text: str) -> float:
    """Seconds in "3600", "90s", "90m", "6h", "1d", "1h30m" (a bare number is seconds).
    ValueError for anything else, or a negative or non-finite number."""
    t = text.strip().lower().replace(" ", "")
    if not t:
        raise ValueError(f"not a duration: {text!r} (e.g. 3600, 90m, 6h, 1h30m)")
    total, pos = 0.0, 0
    while pos < len(t):
        m = _PART.match(t, pos)
        if m is None or (m.group(2) is None and (pos or m.end() != len(t))):
            raise ValueError(f"not a duration: {text!r} (e.g. 3600, 90m, 6h, 1h30m)")
        total += float(m.group(1)) * _UNITS[m.group(2) or "s"]
        pos = m.end()
    if not math.isfinite(total):
        raise ValueError(f"not a duration: {text!r}")
    return total


def human_duration(seconds: float | None) -> str:
    """"under 1 s", "28 s", "12 min 5 s", "3 h 10 min", "2 days 4 h", "46 days"; two units
    at most, rounded; "unknown" for None or infinity."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds <= 0:
        return "0 s"
    if seconds < 1:
        return "under 1 s"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    total_min = int(round(seconds / 60))
    if total_min < 24 * 60:
        hours, minutes = divmod(total_min, 60)
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    total_h = int(round(seconds / 3600))
    days, hours = divmod(total_h, 24)
    if days >= 10:
        days = int(round(seconds / 86400))
        return f"{days} days"
    return f"{days} day{'s' if days > 1 else ''}" + (f" {hours} h" if hours else "")
