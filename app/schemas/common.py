"""Shapes shared by every public model: the UTC time type, the problem body and the flat CSV view."""

from __future__ import annotations

import re
import types
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from app.vocabulary import iso, to_utc, utcnow

UtcDatetime = Annotated[
    datetime,
    AfterValidator(to_utc),
    PlainSerializer(iso, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]
"""A UTC time: naive input is taken as UTC; JSON, webhook payloads and CSV cells write it with ``Z``."""


MAX_ROW_ID = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER PRIMARY KEY on SQLite
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # NUL, line breaks, escapes: never in a name


def no_control_characters(value: str | None) -> str | None:
    if value is not None and CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (NUL, line breaks, tabs, escapes)")
    return value


# Caller-chosen names (camera, line, station, class; part ids): 1 to 64 (128) characters, none of them
# a control character (a NUL breaks PostgreSQL text, a line break a log line or a CSV row).
PLAIN = AfterValidator(no_control_characters)
Name = Annotated[str, StringConstraints(min_length=1, max_length=64), PLAIN]
LongName = Annotated[str, StringConstraints(min_length=1, max_length=128), PLAIN]


# Free text (a review note): line breaks and tabs are text there; other control characters are not.
TEXT_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def no_control_characters_in_text(value: str | None) -> str | None:
    if value is not None and TEXT_CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters other than tabs and line breaks")
    return value


TEXT = AfterValidator(no_control_characters_in_text)


# Times the API takes. A time in a query (a filter) lies in [1970-01-01, 2100-01-01); a capture time,
# a claim about a frame, in [2000-01-01, now + 1 day]: an unset camera clock (1970) or a wrong year is
# refused instead of sorting a frame before or after every other forever.
QUERY_TIMES = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
EARLIEST_CAPTURE = datetime(2000, 1, 1, tzinfo=UTC)
CAPTURE_CLOCK_SKEW = timedelta(days=1)


def _in_range(value: datetime, earliest: datetime, latest: datetime) -> datetime:
    """``value`` as UTC when ``earliest <= value < latest`` (compared before any conversion, which can
    overflow at the ends of the calendar), else ValueError naming the range."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not earliest <= aware < latest:
        raise ValueError(f"must lie between {iso(earliest)} and {iso(latest)}")
    return to_utc(aware)


def query_time(value: datetime | None) -> datetime | None:
    return None if value is None else _in_range(value, *QUERY_TIMES)


def capture_time(value: datetime | None) -> datetime | None:
    """A frame's capture time: not before 2000, not more than a day ahead of this server's clock."""
    return None if value is None else _in_range(value, EARLIEST_CAPTURE, utcnow() + CAPTURE_CLOCK_SKEW)


QUERY_TIME = AfterValidator(query_time)


# CSV cells that a spreadsheet would run as a formula (OWASP "CSV injection") get a leading apostrophe.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class PublicModel(BaseModel):
    """Base of every public model. ``CSV_SPLIT`` names the columns a list or nested field spreads over
    in the flat (CSV) view; other non-scalar fields stay out of it."""

    CSV_SPLIT: ClassVar[dict[str, tuple[str, ...]]] = {}

    model_config = ConfigDict(populate_by_name=True)


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ProblemPublic(BaseModel):
    """RFC 9457 problem details, the body of every error (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="URI naming the kind of problem; it ends with a short reason slug")
    title: str = Field(description="the HTTP status phrase (RFC 9110) or a short summary")
    status: int
    detail: str = Field(description="what went wrong, in a sentence a person can act on")
    instance: str | None = Field(None, description="the request path")
    errors: list[ValidationIssue] | None = Field(None, description="422: one entry per invalid input")
    reasons: list[str] | None = Field(None, description="GET /readyz: why the service is not ready")


# -- the flat view (CSV) --------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, datetime)


def _is_scalar(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_scalar(get_args(annotation)[0])
    if origin is Literal:
        return True
    if origin in (Union, types.UnionType):
        return all(a is type(None) or _is_scalar(a) for a in get_args(annotation))
    return annotation in _SCALARS


def _flat_fields(model: type[PublicModel]) -> list[tuple[str, Any]]:
    """The fields of the flat view: ``id`` first, then the rest in model order."""
    return sorted(model.model_fields.items(), key=lambda kv: kv[0] != "id")


def csv_columns(model: type[PublicModel]) -> tuple[str, ...]:
    """The header of ``model``'s flat view: its scalar fields, split fields spread out."""
    columns: list[str] = []
    for name, field in _flat_fields(model):
        if name in model.CSV_SPLIT:
            columns.extend(model.CSV_SPLIT[name])
        elif _is_scalar(field.annotation):
            columns.append(field.alias or name)
    return tuple(columns)


def _cell(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else neutralise_formula(value)


def csv_values(item: PublicModel) -> list[Any]:
    """One row of the flat view, matching :func:`csv_columns`; values as in the JSON body."""
    data = item.model_dump(mode="json")
    row: list[Any] = []
    for name, field in _flat_fields(type(item)):
        value = data[name]
        if name in item.CSV_SPLIT:
            parts = list(value.values()) if isinstance(value, dict) else list(value or ())
            row.extend(parts or [None] * len(item.CSV_SPLIT[name]))
        elif _is_scalar(field.annotation):
            row.append(_cell(value))
    return row
