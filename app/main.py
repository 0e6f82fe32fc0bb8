"""The FastAPI applications: ``create_app()`` (``serve``: the whole API) and ``create_ingest_app()``
(``ingest``: health, metrics and camera state). Their lifespan runs the one service assembly
(app.service) and attaches it to the app, where routes reach it through app.api.deps; a missing or
broken model leaves the API up but not ready (/readyz)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI

from app import __version__
from app.api import include_ingest_routers, include_routers
from app.api.deps import attach_service
from app.api.params import single_query_values
from app.api.problems import install_problem_handlers
from app.service import Role, running_service
from app.settings import Settings, get_settings


def service_lifespan(settings: Settings, role: Role = Role.SERVE, cameras: Path | None = None
                     ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan that runs the service (app.service.running_service) while the app serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a bad cameras file stops start-up; leaving, the pipeline commits or journals every result
        with running_service(settings, role, cameras) as service:
            attach_service(app, service)
            yield

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to the environment (``SettingsError`` on bad values)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Defect inspection",
        version=__version__,
        description="Surface-defect detection (YOLOv5s on ONNX Runtime) with a SQL defect log.",
        lifespan=service_lifespan(settings),
        dependencies=[Depends(single_query_values)],
    )
    install_problem_handlers(app)
    include_routers(app)
    return app


def create_ingest_app(settings: Settings, cameras: Path) -> FastAPI:
    """``defect-inspect ingest`` over HTTP: health, metrics and camera state; the lifespan runs the
    pipeline of ``cameras``."""
    app = FastAPI(title="Defect inspection: camera ingest", version=__version__,
                  lifespan=service_lifespan(settings, Role.INGEST, cameras),
                  dependencies=[Depends(single_query_values)])
    install_problem_handlers(app)
    include_ingest_routers(app)
    return app
