"""The one reading of a time zone name: an IANA zone, or none at all.

Profiles carry a ``timezone`` attribute and contact policies a ``timezone`` column; both are
read the same way wherever a local time is needed (quiet hours, birthdays, the local hour)
or a stored name is checked. Pure, so the pure cores may use it: ``offers`` is the lowest
package they all may import.
"""

from __future__ import annotations

from datetime import tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

# Longer than any IANA name; a longer string would only cost a file-system lookup.
MAX_ZONE_NAME_LENGTH = 64


def time_zone(name: Any) -> tzinfo | None:
    """The IANA zone ``name``, or None when it is not one (not text, empty, too long, unknown)."""
    if type(name) is not str or not name or len(name) > MAX_ZONE_NAME_LENGTH:
        return None
    return _zone_named(name)


@lru_cache(maxsize=512)  # decisions and imports look the same few zones up again and again
def _zone_named(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, LookupError):  # unknown key, bad path characters
        return None
