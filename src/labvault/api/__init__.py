"""The HTTP face: ``create_app(settings)`` builds the FastAPI app. Deny by default: every router
but the public one (health, login, MFA, enrolment) requires an authenticated principal."""

from labvault.api.app import create_app

__all__ = ["create_app"]
