"""MQTT topic names (docs/integration.md). A camera's topics sit under
``<prefix>/<line>/<station>/<camera>``; a missing line or station is ``_``, and the characters MQTT
reserves in a topic level (``/ + #``) become ``_``."""

from __future__ import annotations

import re

RESERVED = re.compile(r"[/+#\x00]")
MISSING = "_"


def level(name: str | None) -> str:
    """One topic level for a line, station or camera name."""
    if not name:
        return MISSING
    return RESERVED.sub("_", name)


def check_prefix(prefix: str) -> str:
    """The prefix as given, or ValueError: one or more levels, none empty, no wildcards."""
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise ValueError("the prefix is one or more topic levels separated by '/', none empty")
    if "+" in prefix or "#" in prefix or "\x00" in prefix:
        raise ValueError("the prefix may not hold the wildcards '+' or '#'")
    return prefix


def camera_topic(prefix: str, line: str | None, station: str | None, camera: str | None, kind: str) -> str:
    """``<prefix>/<line>/<station>/<camera>/<kind>``; kind: inspection, defect, verdict, counters, state
    or alarm."""
    return "/".join((prefix, level(line), level(station), level(camera), kind))


def availability_topic(prefix: str, client_id: str) -> str:
    """Where a publishing process says ``online`` (retained) and its last will ``offline``."""
    return f"{prefix}/availability/{level(client_id)}"
