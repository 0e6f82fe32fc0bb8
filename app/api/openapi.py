"""The problem responses of the OpenAPI document: every 4xx/5xx a route can answer is declared as an
``application/problem+json`` body of the ``Problem`` schema (:class:`app.schemas.ProblemPublic`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from app.api.problems import PROBLEM_MEDIA_TYPE, STATUS_TITLES
from app.schemas import ProblemPublic

PROBLEM_SCHEMA = "Problem"
COMPONENT_REF = "#/components/schemas/{model}"

WHEN: dict[int, str] = {
    400: "a malformed request (bad query, cursor, range or multipart body)",
    401: "no API key, or an unknown or revoked one",
    403: "the key's role does not allow this",
    404: "the resource does not exist",
    409: "the request clashes with what is stored",
    413: "the upload is larger than INSPECT_MAX_UPLOAD_MB",
    415: "a content type the route does not read",
    422: "a parameter or body field breaks a rule; `errors` lists them",
    503: "a dependency is away (no model loaded, database down); see Retry-After",
}


def problem_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route or router: each status as a problem body. ``descriptions`` override
    the default text, keyed ``s404="..."``."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = descriptions.get(f"s{status}", WHEN[status])
        out[status] = {
            "description": f"{STATUS_TITLES[status]}: {text}",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": COMPONENT_REF.format(model=PROBLEM_SCHEMA)}}},
        }
    return out


BLANK = {"type": "string", "maxLength": 0}


def field_schemas(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The JSON schema of each field of ``model`` read as a form field or query parameter whose value
    may be left out or sent empty (both leave it unset): the value's schema (an optional field's
    ``null`` branch replaced by the empty string), with the field's description."""
    out: dict[str, dict[str, Any]] = {}
    for name, schema in model.model_json_schema(ref_template=COMPONENT_REF)["properties"].items():
        branches = [{k: v for k, v in b.items() if k != "default"}
                    for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
        value: dict[str, Any] = {"anyOf": [*branches, BLANK]}
        if "description" in schema:
            value["description"] = schema["description"]
        out[name] = value
    return out


def _problem_components() -> dict[str, Any]:
    schema = ProblemPublic.model_json_schema(ref_template=COMPONENT_REF, mode="serialization")
    defs = schema.pop("$defs", {})
    return {**defs, PROBLEM_SCHEMA: schema}


def _declare_unreadable_bodies(document: dict[str, Any]) -> None:
    """Every route that reads a body answers 400 when the body cannot be parsed at all (a JSON body
    that is not UTF-8, a broken multipart envelope), before any field is looked at."""
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if "requestBody" in operation:
                operation["responses"].setdefault(
                    "400", problem_responses(400, s400="a body that cannot be parsed")[400])


def install_problem_schema(app: FastAPI) -> None:
    """Add the Problem schema to the app's OpenAPI components (the routes refer to it by name)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_problem_components())
            _declare_unreadable_bodies(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
