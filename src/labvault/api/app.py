"""The app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html

from labvault import __version__
from labvault.api import advisories, alerts, errors, fhir, identity, incidents, ingest, routes, work
from labvault.api.deps import Reader, check_declared
from labvault.api.middleware import AccessLogMiddleware, SecurityMiddleware
from labvault.config import Settings


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """``app.state.threads`` (``labvault serve --threads``): how many requests run their blocking
    work (database, decryption, rendering) at once. Python runs one thread at a time: a few threads
    keep the processor busy while one waits on the database; forty (the default) take turns on the
    interpreter lock and every request finishes late."""
    import gc

    import anyio.to_thread

    # What the app built at start (routes, templates, catalogues, the ORM's caches) is frozen out
    # of the garbage collector's reach: its full passes then walk only what requests create,
    # instead of stopping every request for tens of milliseconds now and then.
    gc.collect()
    gc.freeze()
    threads = getattr(app.state, "threads", None)
    if threads:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
    yield


def create_app(settings: Settings | None = None, *, runtime=None) -> FastAPI:
    """Build the app on an initialised home (or on a given runtime, for tests and benchmarks)."""
    from labvault.runtime import open_runtime

    rt = runtime or open_runtime(settings or Settings.from_env())
    app = FastAPI(
        title="Labvault", version=__version__, openapi_url=None, docs_url=None, redoc_url=None, lifespan=_lifespan
    )
    app.state.gateway = rt.gateway
    app.state.runtime = rt
    errors.install(app)
    app.include_router(routes.public)
    app.include_router(routes.private)
    app.include_router(ingest.router)
    app.include_router(fhir.router)
    app.include_router(identity.router)
    app.include_router(work.router)
    app.include_router(advisories.router)
    app.include_router(alerts.router)
    app.include_router(incidents.router)

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def openapi(caller: Reader) -> dict:
        return app.openapi()

    @app.get("/api/v1/docs", include_in_schema=False)
    def docs(caller: Reader):
        page = get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="Labvault API")
        # Swagger UI loads its script and style from a CDN: this page alone allows that origin.
        page.headers["content-security-policy"] = (
            "default-src 'none'; script-src https://cdn.jsdelivr.net 'unsafe-inline'; "
            "style-src https://cdn.jsdelivr.net; img-src data: https://fastapi.tiangolo.com; connect-src 'self'; "
            "frame-ancestors 'none'"
        )
        return page

    app.add_middleware(SecurityMiddleware)
    app.add_middleware(AccessLogMiddleware)  # added last: outermost
    # Every route declares the access it needs (deps.Access): an app with an undeclared one is not built.
    app.state.access = check_declared(app.routes)
    return app
