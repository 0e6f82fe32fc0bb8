"""One vocabulary, decided once: verdicts, how numbers are rounded and how times are written in
every public view (API bodies, webhook payloads, CSV cells); the journal stores values unrounded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

Verdict = Literal["OK", "NG"]
OK: Final = "OK"
NG: Final = "NG"
VERDICTS: Final = (OK, NG)

API_SOURCE: Final = "api"  # the ``source`` of a frame posted over HTTP (camera frames: "stream")

BOX_DECIMALS: Final = 2  # box corners, original-image pixels
CONFIDENCE_DECIMALS: Final = 5
MS_DECIMALS: Final = 3  # stage timings, milliseconds
RATE_DECIMALS: Final = 6  # yields and review rates


def round_box(box: Sequence[float]) -> list[float]:
    """x1, y1, x2, y2 rounded for a public view."""
    return [round(float(v), BOX_DECIMALS) for v in box]


def round_confidence(value: float) -> float:
    return round(float(value), CONFIDENCE_DECIMALS)


def round_ms(value: float | None) -> float:
    return round(float(value or 0.0), MS_DECIMALS)


def round_rate(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when there is nothing to divide by."""
    return round(numerator / denominator, RATE_DECIMALS) if denominator else None


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive input (SQLite hands those back) is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``: the one way times are written in public views."""
    if value is None:
        return None
    return to_utc(value).isoformat().replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)
