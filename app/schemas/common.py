"""Shapes shared by every public model: the UTC time type, the problem body and the flat CSV view."""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue

from app.vocabulary import iso, to_utc, utcnow

UtcDatetime = Annotated[
    datetime,
    AfterValidator(to_utc),
    PlainSerializer(iso, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]
"""A UTC time: naive input is taken as UTC; JSON, webhook payloads and CSV cells write it with ``Z``."""

ISO_DATE_START = re.compile(r"\s*\d{4}-\d{2}-\d{2}")


def iso_8601_only(value: Any) -> Any:
    """Refuse what pydantic would read as a Unix timestamp ("1", "1.5", a number): the documented
    format is an ISO 8601 date-time."""
    if isinstance(value, int | float) or (isinstance(value, str) and not ISO_DATE_START.match(value)):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-03-02T06:00:00Z")
    return value


EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def utc_clamped(value: datetime) -> datetime:
    """``value`` in UTC; a time whose offset moves it before year 1 or after 9999 (e.g.
    0001-01-01T00:00:00+01:00) becomes the first or last representable instant."""
    try:
        return to_utc(value)
    except OverflowError:
        return EARLIEST if value.year == 1 else LATEST


DatetimeInput = Annotated[datetime, BeforeValidator(iso_8601_only), AfterValidator(utc_clamped)]
"""A time a caller sends (query parameter or form field): ISO 8601 only, handed on in UTC."""


MAX_ROW_ID = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER PRIMARY KEY on SQLite
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # NUL, line breaks, escapes: never in a name


def no_control_characters(value: str | None) -> str | None:
    if value is not None and CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (NUL, line breaks, tabs, escapes)")
    return value


@dataclass(frozen=True)
class DocumentedPattern:
    """Writes ``pattern`` into a string field's JSON schema (OpenAPI) without enforcing it, for a rule
    a validator checks with its own error message (``str | None``: into the string branch)."""

    pattern: str

    def __get_pydantic_json_schema__(self, core_schema: Any,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string":
                branch["pattern"] = self.pattern
        return schema


class PatternChecked(AfterValidator):
    """``check`` as a validator (with its own error message) whose rule the JSON schema states as the
    equivalent ``pattern``."""

    def __init__(self, check: Any, pattern: str) -> None:
        super().__init__(check)
        object.__setattr__(self, "pattern", pattern)  # AfterValidator is a frozen dataclass

    def __get_pydantic_json_schema__(self, core_schema: Any,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return DocumentedPattern(self.pattern).__get_pydantic_json_schema__(core_schema, handler)


NO_CONTROL_CHARACTERS_PATTERN = r"^[^\x00-\x1f\x7f]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"


def no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Free text (a review note, a webhook secret): anything but NUL, which PostgreSQL text cannot hold.
NO_NUL = PatternChecked(no_nul, NO_NUL_PATTERN)

# Caller-chosen names (camera, line, station, class; part ids): 1 to 64 (128) characters, none of them
# a control character (a NUL breaks PostgreSQL text, a line break a log line or a CSV row).
PLAIN = PatternChecked(no_control_characters, NO_CONTROL_CHARACTERS_PATTERN)
Name = Annotated[str, StringConstraints(min_length=1, max_length=64), PLAIN]
LongName = Annotated[str, StringConstraints(min_length=1, max_length=128), PLAIN]


# Free text (a review note): line breaks and tabs are text there; other control characters are not.
TEXT_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def no_control_characters_in_text(value: str | None) -> str | None:
    if value is not None and TEXT_CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters other than tabs and line breaks")
    return value


TEXT = PatternChecked(no_control_characters_in_text, TEXT_PATTERN)


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
