"""The web interface in a real browser: the real app served by uvicorn on loopback, Debian's
chromium driven by Playwright (never a browser Playwright downloads), axe-core for accessibility.

Fixtures:

- ``web_server`` (module scope): the app on ``http://127.0.0.1:<port>`` over a fresh home with two
  generated labs and enrolled accounts (the API tests' helpers); yields a ``WebServer``: ``base``,
  ``url(path)``, ``labs``, ``patients``/``nirs``/``names`` per lab, ``accounts`` by key
  (``biologist_a``, ``lab_admin_a``, ``dpo_a``, ``biologist_b``, ``support``, ``technician_a``: email,
  password and ``code()`` giving a TOTP code the server accepts), ``logs`` (the server's formatted log lines)
  and ``personal_values_in_logs()``. At teardown the logs and the audit trail are checked for
  personal values.
- ``browser`` (session scope, so one per pytest-xdist worker): chromium, headless. Missing: the
  tests skip with a one-line reason, or fail under CI=true.
- ``page`` (per test): a fresh context and page of that browser; ``page_events`` holds its console
  messages, page errors and CSP violations; a screenshot goes to
  ``test-artifacts/screenshots/<test>.png`` at teardown.
- ``axe_check(page)``: the serious and critical axe-core violations of the page as it is.
"""

from __future__ import annotations

import copy
import logging
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labvault.access import Gateway, Purpose
from labvault.accounts import service, totp
from labvault.crypto.keys import PLATFORM, LocalKeyring
from labvault.store.engine import make_engine, migrate
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.api.conftest import FINESS, LAB_A, LAB_B, PATIENTS, SEED, Accounts
from tests.conftest import ADMIN, PASSPHRASE, TotpClock, make_lab, need, scan_audit_events

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
HEALTH = "/health"

# The accounts a web test may log in with: key -> (role, lab; "" for a vendor account).
WEB_ACCOUNTS = {
    "biologist_a": ("biologist", LAB_A),
    "lab_admin_a": ("lab_admin", LAB_A),
    "dpo_a": ("lab_dpo", LAB_A),
    "biologist_b": ("biologist", LAB_B),
    "support": ("support", ""),
    "technician_a": ("technician", LAB_A),
}


class TotpCodes:
    """TOTP codes the served app accepts, for the accounts of one server.

    The app checks codes against ``labvault.accounts.totp.clock``, read at each request, so the
    server thread sees the ``TotpClock`` the autouse ``totp_clock`` fixture installs for each test.
    Each test's clock starts at the same step, while the server keeps each account's last step
    across tests (and enrolment used the real current step): the clock is moved past the last
    step used before each code. Without a test clock (real time), a step already used is waited
    out."""

    def __init__(self) -> None:
        self._last_t = 0.0
        self._last_step: dict[str, int] = {}
        self._lock = threading.Lock()

    def enrolled(self, secret: str) -> None:
        """Enrolment confirmed a code of the real current step: no code given here is of that step."""
        with self._lock:
            self._last_step[secret] = int(time.time() // totp.STEP)
            self._last_t = max(self._last_t, time.time() + totp.STEP)

    def code(self, secret: str) -> str:
        import pyotp

        with self._lock:
            clock = getattr(totp.clock, "__self__", None)
            if isinstance(clock, TotpClock):
                clock.t = max(clock.t, self._last_t)
                value = clock.code(secret)
                self._last_t = clock.t
                return value
            while int(time.time() // totp.STEP) <= self._last_step.get(secret, -1):
                time.sleep(0.5)
            self._last_step[secret] = int(time.time() // totp.STEP)
            return pyotp.TOTP(secret).now()


@dataclass(frozen=True)
class WebAccount:
    key: str  # "biologist_a", "lab_admin_a", "dpo_a", "biologist_b", "support"
    role: str
    tenant: str
    email: str
    password: str
    secret: str | None  # TOTP secret, for the roles that need MFA
    _codes: TotpCodes = field(repr=False)

    @property
    def mfa(self) -> bool:
        return self.secret is not None

    def code(self) -> str:
        """A current TOTP code of a time step this account has not used yet."""
        assert self.secret is not None, f"{self.key} has no second factor"
        return self._codes.code(self.secret)


class LogCapture(logging.Handler):
    """The server's log lines as ``labvault serve`` writes them: Labvault's and uvicorn's records,
    formatted and cleaned by ``labvault.logs.PersonalDataFilter`` (on a copy of each record)."""

    LOGGERS = ("labvault", "uvicorn")

    def __init__(self) -> None:
        from labvault import logs

        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(logs.FORMAT))
        self._filter = logs.PersonalDataFilter()
        self.lines: list[str] = []
        self._levels: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        rec = copy.copy(record)
        self._filter.filter(rec)
        text = self.format(rec)
        with self.lock or threading.Lock():
            self.lines.append(text)

    def install(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.addHandler(self)
        logging.getLogger("labvault").setLevel(logging.INFO)  # the access log, as ``labvault serve``

    def remove(self) -> None:
        for name, level in self._levels.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(level)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class WebServer:
    base: str  # http://127.0.0.1:<port>
    labs: tuple[str, str]  # (lab A, lab B)
    patients: dict[str, list[str]]  # lab -> patient ids
    nirs: dict[str, list[str]]  # lab -> the patients' NIRs (same order)
    names: dict[str, list[tuple[str, str]]]  # lab -> (family name, given names) (same order)
    accounts: dict[str, WebAccount]
    logs: LogCapture
    gateway: Gateway

    def url(self, path: str) -> str:
        return self.base + path

    def personal_values_in_logs(self) -> list[str]:
        """Which generated patients' NIRs or names appear in the server's log lines: a list of
        "<lab> patient <index>: nir|family name|given names" (never the value itself)."""
        text = self.logs.text
        found = []
        for lab in self.labs:
            for i, (nir, (family, given)) in enumerate(zip(self.nirs[lab], self.names[lab], strict=True)):
                for what, value in (("nir", nir), ("family name", family), ("given names", given)):
                    if value and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text):
                        found.append(f"{lab} patient {i}: {what}")
        return found


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _wait_healthy(base: str, thread: threading.Thread, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + HEALTH, timeout=2) as r:  # loopback, plain http
                if r.status == 200:
                    return
        except OSError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the web server did not answer {HEALTH}")
        time.sleep(0.05)


def _enrol(gw: Gateway, accounts: Accounts, key: str, role: str, lab: str, codes: TotpCodes) -> WebAccount:
    """An enrolled account, created as the API tests create theirs (the platform admin for vendor
    accounts and a lab's first lab_admin, the lab's lab_admin for the others)."""
    tenant = lab or PLATFORM
    email = f"{key.replace('_', '-')}@{lab or 'vendor'}.web.invalid"
    password = f"Web-tests-pass-{list(WEB_ACCOUNTS).index(key) + 1:02d}!"
    with gw.unit(accounts.creator(lab, role), Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=tenant, name=f"Web {role}", email=email, roles=[role])
    with gw.auth_unit(source_addr="setup", user_agent="setup") as u:
        secret = service.enrol_directly(u, email, password)
    if secret is not None:
        codes.enrolled(secret)
    return WebAccount(key, role, tenant, email, password, secret, codes)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, wired_hooks) -> Iterator[WebServer]:
    import uvicorn
    from argon2 import PasswordHasher

    from labvault.accounts import passwords
    from labvault.config import Settings
    from labvault.runtime import Runtime
    from labvault.web import create_app

    home = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{home / 'labvault.db'}"
    with pytest.MonkeyPatch.context() as mp:
        # Argon2id at minimal cost, as in the API tests: same algorithm and checks, less time.
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        mp.setattr(passwords, "_HASHER", cheap)
        mp.setattr(passwords, "_DUMMY", cheap.hash("labvault-dummy-password-for-timing"))

        engine = make_engine(url)
        migrate(engine)
        keyring = LocalKeyring.create(home / "keyring.json", PASSPHRASE, scrypt_n=2**14)
        gw = Gateway(engine, keyring, pin_path=home / "platform-pin.json")
        with gw.bootstrap(ADMIN) as u:
            u.ensure_account(
                PLATFORM, ADMIN.account_id, ADMIN.name, "admin@test.invalid", ADMIN.roles, commitment="test"
            )
            u.ensure_platform_keys()
        patients, nirs, names = {}, {}, {}
        for lab in (LAB_A, LAB_B):
            make_lab(gw, lab, FINESS[lab])
            load_lab(gw, ADMIN, lab, patients=PATIENTS, seed=SEED)
            records = list(LabGenerator(lab, SEED).patients(PATIENTS))
            patients[lab] = [r.identity.patient_id for r in records]
            nirs[lab] = [r.identity.nir or "" for r in records]
            names[lab] = [(r.identity.family_name, r.identity.given_names) for r in records]
        codes, helper = TotpCodes(), Accounts(gw)
        helper[f"lab_admin@{LAB_A}"]  # each lab's first lab_admin: the one who adds the lab's accounts
        helper[f"lab_admin@{LAB_B}"]
        accounts = {key: _enrol(gw, helper, key, role, lab, codes) for key, (role, lab) in WEB_ACCOUNTS.items()}

        logs = LogCapture()
        logs.install()
        app = create_app(runtime=Runtime(Settings(home=home), gw, ADMIN))
        sock = _free_socket()
        # A browser's keep-alive connections are closed after 1 s at shutdown, not waited for.
        config = uvicorn.Config(
            app, host="127.0.0.1", log_level="warning", log_config=None, access_log=False, timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="web-server", daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        web = WebServer(base, (LAB_A, LAB_B), patients, nirs, names, accounts, logs, gw)
        try:
            _wait_healthy(base, thread)
            yield web
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            logs.remove()
            engine.dispose()
            keyring.close()
    leaked = web.personal_values_in_logs()
    assert not leaked, f"personal values in the server's log: {leaked}"
    scan_audit_events(url)


@pytest.fixture(scope="session")
def browser():
    need(CHROMIUM.exists(), f"{CHROMIUM} not found: apt-get install chromium (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class PageEvents:
    """What a page said while a test ran: console messages ("type: text"), uncaught page errors,
    and Content-Security-Policy violations (from the console and from ``securitypolicyviolation``)."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    documents: list[tuple[str, int, str | None]] = field(default_factory=list)  # (url, status, CSP header)

    @property
    def console_errors(self) -> list[str]:
        return [m for m in self.console if m.startswith("error:")]


# Reports a violation the page's CSP blocked to the console, whatever the page itself does
# (init scripts run through the DevTools protocol: the page's own policy does not apply to them).
_CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation (securitypolicyviolation): Content Security Policy directive '
    + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
});
"""


@pytest.fixture
def page_events() -> PageEvents:
    return PageEvents()


def _screenshot_name(nodeid: str) -> str:
    name = nodeid.split("::", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:150] + ".png"


@pytest.fixture
def page(browser, page_events: PageEvents, request) -> Iterator:
    context = browser.new_context(locale="fr-FR")
    pg = context.new_page()
    pg.add_init_script(_CSP_LISTENER)

    def on_console(msg) -> None:
        text = f"{msg.type}: {msg.text}"
        page_events.console.append(text)
        if "Content Security Policy" in msg.text:
            page_events.csp_violations.append(msg.text)

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: page_events.errors.append(str(exc)))

    def on_response(resp) -> None:
        if resp.request.resource_type == "document" and resp.frame == pg.main_frame:
            page_events.documents.append((resp.url, resp.status, resp.headers.get("content-security-policy")))

    pg.on("response", on_response)
    try:
        yield pg
    finally:
        try:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(SCREENSHOTS / _screenshot_name(request.node.nodeid)), full_page=True)
        finally:
            context.close()


def assert_page_clean(events: PageEvents, *, allow_status: frozenset[int] = frozenset()) -> None:
    """Every document the page loaded carried a Content-Security-Policy header; no CSP violation, no
    uncaught page error, no console error (but the browser's "Failed to load resource" report of a
    status listed in ``allow_status``)."""
    assert events.documents, "the page loaded no document"
    missing = [url for url, _, csp in events.documents if not csp]
    assert not missing, f"documents without a Content-Security-Policy header: {missing}"
    assert not events.csp_violations, events.csp_violations
    assert not events.errors, events.errors
    allowed = tuple(f"status of {s} " for s in allow_status)
    errors = [
        m
        for m in events.console_errors
        if not (allowed and "Failed to load resource" in m and any(a in m for a in allowed))
    ]
    assert not errors, errors


def axe_check(page) -> list[dict]:
    """The page's serious and critical axe-core violations (each: id, impact, help, nodes)."""
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    results = Axe().run(page)
    return [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
