"""Path and query parameters shared by the routes, each bounded: row ids within the column type, names
without control characters and within the columns' lengths, times within [1970, 2100)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from app.schemas.common import MAX_ROW_ID, PLAIN, QUERY_TIME

__all__ = ["QUERY_TIME", "ClassNameQuery", "NameQuery", "PartIdPath", "PartIdQuery", "RowId"]

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="row id (1 to 2^63-1)")]
FrameUidPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the frame's frame_uid")]
PartIdPath = Annotated[str, Path(min_length=1, max_length=128), PLAIN]
NameQuery = Annotated[str | None, Query(max_length=64), PLAIN]
PartIdQuery = Annotated[str | None, Query(max_length=128), PLAIN]
ClassNameQuery = Annotated[str | None, Query(max_length=64, description="class after review"), PLAIN]
