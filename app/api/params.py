"""Path and query parameters shared by the routes, each bounded: row ids within the column type, names
without control characters and within the columns' lengths, times within [1970, 2100)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from app.schemas.common import MAX_ROW_ID, PLAIN, QUERY_TIME

__all__ = ["QUERY_TIME", "ClassNameQuery", "NamePath", "NameQuery", "PartIdPath", "PartIdQuery", "RowId"]

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="row id (1 to 2^63-1)")]
FrameUidPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the frame's frame_uid")]
PartIdPath = Annotated[str, Path(min_length=1, max_length=128), PLAIN]
NamePath = Annotated[str, Path(min_length=1, max_length=64), PLAIN]
NameQuery = Annotated[str | None, Query(max_length=64), PLAIN]
PartIdQuery = Annotated[str | None, Query(max_length=128), PLAIN]
ClassNameQuery = Annotated[str | None, Query(max_length=64, description="class after review"), PLAIN]


def _declared_query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared_query_names(sub)
    return names


def single_query_values(request: Request) -> None:
    """No query parameter of this API is a list: one given twice (``?line=a&line=b``) is a 422
    problem, not a silent choice of one of the values (HTTP parameter pollution)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = _declared_query_names(dependant) | {  # and those a route reads itself (the upload's)
        p["name"] for p in (getattr(route, "openapi_extra", None) or {}).get("parameters", [])
        if p.get("in") == "query"}
    repeated = sorted(name for name in declared if len(request.query_params.getlist(name)) > 1)
    if repeated:
        raise RequestValidationError([{"loc": ("query", name), "msg": "given more than once; give it once",
                                       "type": "repeated"} for name in repeated])
