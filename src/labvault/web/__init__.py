"""The web interface: server-rendered pages (Jinja2) on the API's FastAPI app, under ``/``.

Every page reads and writes through the access gateway exactly as the API does (no page reads a
table); a page asks for a logged-in session (never a bearer token) and sends an anonymous visitor
to the login page. Pages carry a strict Content-Security-Policy (scripts and styles from this origin
only: no inline script, no eval), every form a CSRF field, and speak French unless English is
chosen (Babel catalogues; French numbers and dates: 12,5 g/L, 06/12/2026).
"""

from labvault.web.app import create_app

__all__ = ["create_app"]
