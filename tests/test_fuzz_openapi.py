"""A schema-driven fuzz of the OpenAPI document (schemathesis): every operation gets requests generated
from its declared parameters and bodies, valid ones (positive) and ones that break a declared rule
(negative), sent over real HTTP to the app under uvicorn with a real admin API key, on a seeded
database (SQLite, and PostgreSQL when INSPECT_TEST_POSTGRES_URL is set). No answer may be a 5xx; every
answer must have a documented status, a documented content type and a body of the documented schema
(problem+json for errors); a request that breaks a declared rule must be refused, and a valid one
accepted unless a rule the schema cannot state refuses it (see RULES_BEYOND_THE_SCHEMA). Every secured
operation called without a key answers its documented 401.

INSPECT_TEST_FUZZ_EXAMPLES sets the examples per operation and mode (deeper local runs:
docs/testing.md); INSPECT_TEST_FUZZ_SEED draws other examples, reproducibly."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from live_server import serving
from mes_helpers import make_key, seed_database
from schemathesis import GenerationMode

from app.api.problems import PROBLEM_MEDIA_TYPE
from app.settings import Settings

pytestmark = pytest.mark.drill

EXAMPLES_ENV = "INSPECT_TEST_FUZZ_EXAMPLES"
SEED_ENV = "INSPECT_TEST_FUZZ_SEED"
EXAMPLES = int(os.environ.get(EXAMPLES_ENV) or 30)
ANONYMOUS_EXAMPLES = max(EXAMPLES // 6, 3)
SEED = int(os.environ.get(SEED_ENV) or 14)

# A valid request may still be refused for a rule JSON Schema cannot state, each with its documented
# answer: 400 for a body or query malformed beyond the schema (an image that does not decode, a cursor
# that is not one of ours, a range that ends before it starts), or a 422 problem of one of these types:
# rules that depend on the loaded model (its input size; its class names, one of which a reclassify
# needs) or on name resolution (a webhook target on a refused network). Any other refusal of a valid
# request (a 422 ``validation`` problem: a rule missing from the document) fails the fuzz, except a time
# outside its documented range (JSON Schema has no bounds for a date-time string; the parameter's
# description states them).
ACCEPTED = {400, 401, 403, 404, 409}
RULES_BEYOND_THE_SCHEMA = {"unsupported_imgsz", "invalid_review", "refused_target"}
TIME_FIELDS = {"from", "to", "captured_at"}
CONFIG = {"checks": {"positive_data_acceptance": {"enabled": False}}}  # replaced by the check below


def valid_requests_are_refused_only_for_rules_beyond_the_schema(ctx: Any, response: Any, case: Any) -> None:
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    status = response.status_code
    if status < 300 or status in ACCEPTED:
        return
    reason = ""
    if status == 422 and response.headers.get("content-type", [""])[0].startswith(PROBLEM_MEDIA_TYPE):
        body = response.json()
        reason = str(body.get("type", "")).rsplit("/", 1)[-1]
        errors = body.get("errors") or []
        if reason == "validation" and errors and all(
                "must lie between" in str(e.get("msg", "")) and e.get("loc", [""])[-1] in TIME_FIELDS
                for e in errors):
            return
    assert reason in RULES_BEYOND_THE_SCHEMA, f"a valid request refused with {status}: {response.text[:500]}"


@dataclass
class Tally:
    """What the fuzz sent (schemathesis' own follow-up requests included) and what came back."""

    statuses: Counter = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    def count(self, response: requests.Response, *_: Any, **__: Any) -> None:
        self.statuses[response.status_code] += 1

    def of_class(self, hundreds: int) -> int:
        return sum(n for status, n in self.statuses.items() if status // 100 == hundreds)


@dataclass
class Live:
    base: str
    admin_key: str
    admin_key_id: int
    spare_key_id: int


def _key_id(database_url: str, name: str) -> int:
    from sqlalchemy import select

    from app.db.models import ApiKey
    from app.db.session import Database

    db = Database(database_url)
    try:
        with db.session() as session:
            return session.scalars(select(ApiKey.id).where(ApiKey.name == name)).one()
    finally:
        db.dispose()


@pytest.fixture
def live(database_url: str, tiny_model_path: Path, tmp_path: Path) -> Iterator[Live]:
    """uvicorn with auth on and /metrics behind a key, a seeded defect log (stored images included), an
    admin key for the fuzz and a spare key it may revoke. Webhooks may only target TEST-NET-1
    (192.0.2.0/24, never routed), so no generated webhook sends anything off the machine."""
    settings = Settings(database_url=database_url, model_path=tiny_model_path, data_dir=tmp_path / "data",
                        auth_enabled=True, metrics_public=False, image_policy="ng", providers=["cpu"],
                        intra_op_threads=1, webhook_allowed_networks=["192.0.2.0/24"])
    seed_database(database_url, settings.data_dir)
    key = make_key(database_url, "admin", "fuzz-admin")
    make_key(database_url, "admin", "fuzz-spare")
    with serving(settings) as base:
        yield Live(base, key, _key_id(database_url, "fuzz-admin"), _key_id(database_url, "fuzz-spare"))


def _operations(live: Live, key: str | None) -> list[Any]:
    """The operations of the live document; with ``key``, schemathesis sends it by both schemes the
    document declares (and knows when it left the key out on purpose)."""
    config = dict(CONFIG)
    if key is not None:
        config["auth"] = {"openapi": {"HTTPBearer": {"bearer": key}, "APIKeyHeader": {"api_key": key}}}
    schema = schemathesis.openapi.from_url(f"{live.base}/openapi.json",
                                           config=schemathesis.Config.from_dict(config))
    return [result.ok() for result in schema.get_all_operations()]


def _keep_own_key(case: Any, live: Live) -> None:
    """Revoking the fuzz's own key would turn every later call into a 401: that id becomes the spare's."""
    params = case.path_parameters or {}
    if case.method.upper() == "DELETE" and params.get("key_id") == live.admin_key_id:
        params["key_id"] = live.spare_key_id


def _media_types(operation: Any, mode: GenerationMode) -> list[str | None]:
    """The request bodies to generate (None: schemathesis' choice). Negative cases leave out multipart
    bodies with a file part: every form value travels as text, and schemathesis cannot read such a body
    back to see that a mutated value (a number for a string) arrived as valid text, so it would report
    valid requests as accepted invalid ones. Their fields are the raw-body query parameters, which
    are fuzzed."""
    declared = [body.media_type for body in operation.body]
    if mode is GenerationMode.NEGATIVE and "multipart/form-data" in declared:
        return [t for t in declared if t != "multipart/form-data"]
    return [None]


def _fuzz(operation: Any, mode: GenerationMode, examples: int, call: Any) -> None:
    """``call(case)`` for up to ``examples`` cases of ``operation`` (shrunk to the smallest on failure)."""
    media_types = _media_types(operation, mode)
    for media_type in media_types:

        @seed(SEED)
        @settings(max_examples=max(examples // len(media_types), 1), deadline=None, database=None,
                  print_blob=False, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode, media_type=media_type))
        def run(case: Any) -> None:
            call(case)

        run()


def _run(tally: Tally, name: str, fuzz: Any) -> None:
    try:
        fuzz()
    except Unsatisfiable:  # nothing to break: no parameters and no body
        pass
    except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
        tally.failures[name] = str(exc)[:3000]


def test_fuzzing_the_openapi_document_gives_no_5xx_and_only_documented_answers(live: Live) -> None:
    tally = Tally()
    session = requests.Session()
    session.hooks["response"].append(tally.count)

    def as_admin(case: Any) -> None:
        _keep_own_key(case, live)
        case.call_and_validate(session=session,
                               additional_checks=[valid_requests_are_refused_only_for_rules_beyond_the_schema])

    def anonymous(case: Any) -> None:
        response = case.call_and_validate(session=session)
        assert response.status_code == 401, f"{case.operation.label} without a key: {response.status_code}"

    for operation in _operations(live, live.admin_key):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(tally, f"{operation.label} [{mode.value}]",
                 lambda: _fuzz(operation, mode, EXAMPLES, as_admin))  # noqa: B023 (called at once)
    for operation in _operations(live, None):
        if operation.definition.raw.get("security"):
            _run(tally, f"{operation.label} [no key]",
                 lambda: _fuzz(operation, GenerationMode.POSITIVE, ANONYMOUS_EXAMPLES, anonymous))  # noqa: B023
    print(f"\nfuzz: {sum(tally.statuses.values())} requests, {dict(sorted(tally.statuses.items()))}")
    assert not tally.failures, "\n\n".join(f"== {k}\n{v}" for k, v in tally.failures.items())
    assert tally.of_class(5) == 0
    assert tally.of_class(2) > 0 and tally.of_class(4) > 0
