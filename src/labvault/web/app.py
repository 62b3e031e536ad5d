"""The app with its pages: the API's app (``labvault.api.create_app``) and the web interface on it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from labvault.api import create_app as api_app
from labvault.api.deps import check_declared
from labvault.config import Settings
from labvault.web import admin, advisories, alerts, breach, dpo, incidents, lab, pages, staff, vendor, work

# The parts of the interface beyond sign-in and the patient pages, each its own router.
ROUTERS: list = [
    admin.router,
    advisories.router,
    alerts.router,
    breach.router,
    dpo.router,
    incidents.router,
    lab.router,
    staff.router,
    vendor.router,
    work.router,
]


def create_app(settings: Settings | None = None, *, runtime: Any = None) -> FastAPI:
    """The JSON API, FHIR and the pages on one app; every route declares its access."""
    app = api_app(settings, runtime=runtime)
    pages.install(app, *ROUTERS)
    app.state.access = check_declared(app.routes)  # the pages' routes too
    return app
