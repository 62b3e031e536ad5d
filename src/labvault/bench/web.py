"""Web pages benchmark: the patient page and the audit explorer, signed in, over keep-alive
connections, beside the JSON API's results read and ``/health`` in the same run.

As ``bench api``: a scratch home (one generated lab, an enrolled biologist), ``labvault serve`` on
loopback as a child process, the load generator as a second child process (``labvault.bench.api
--drive``). The biologist signs in through the login page (its session cookie is what the pages
take); the patients drawn are those with ``RESULTS`` results, so each page shows about
30 results with their previous values and a trend chart per analyte, each read decrypted and
audited by the server. Then the lab's DPO signs in and the audit explorer's first page (100 of
the lab's events, at least the thousand the page phase wrote, names resolved) is measured.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from labvault.bench.api import (
    LAB_SEED,
    Progress,
    _bearer_token,
    _child_env,
    _cpu_s,
    _per_request,
    _prepare_home,
    _run_driver,
    _stop,
    _tail,
    _wait_health,
    start_server,
)

# The patients shown: those with 26 to 34 results (about 30 on average, as the figure asks).
RESULTS = range(26, 35)


def _session_cookie(base_url: str, email: str, password: str, totp_secret: str | None = None) -> str:
    """Sign in through the login page as a browser does (with the authenticator's code when the
    account has one); the ``Cookie`` header of the session."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as c:
        page = c.get("/login")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if page.status_code != 200 or m is None:
            raise RuntimeError(f"the login page failed: HTTP {page.status_code}")
        r = c.post("/login", data={"csrf": m.group(1), "email": email, "password": password, "next": "/patients"})
        if totp_secret is not None and "lv_session" not in c.cookies:
            import pyotp

            from labvault.accounts import totp

            page = c.get("/login/totp")
            m = re.search(r'name="csrf" value="([^"]+)"', page.text)
            if page.status_code != 200 or m is None:
                raise RuntimeError(f"the authenticator's page failed: HTTP {page.status_code}")
            # the enrolment used this step's code: the next step's is accepted too (one step either side)
            code = pyotp.TOTP(totp_secret).at(totp.clock() + totp.STEP)
            r = c.post("/login/totp", data={"csrf": m.group(1), "code": code, "next": "/patients"})
        if r.status_code not in (200, 303) or "lv_session" not in c.cookies:
            raise RuntimeError(f"sign-in through the pages failed: HTTP {r.status_code}")
        return f"lv_session={c.cookies['lv_session']}"


def _add_dpo(env: dict[str, str], lab: str) -> tuple[str, str, str]:
    """The lab's DPO, added by the lab's admin (as in production) and enrolled with its authenticator
    (the role opens patients' identities: a second factor is required); email, password, TOTP secret."""
    from labvault.access import Principal, Purpose
    from labvault.accounts import service
    from labvault.config import Settings
    from labvault.runtime import open_runtime

    rt = open_runtime(Settings.from_env(env))
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            admin = next(a for a in service.list_accounts(u, lab) if "lab_admin" in a["roles"].split(","))
        lab_admin = Principal(admin["account_id"], admin["name"], lab, frozenset({"lab_admin"}))
        email, password = f"dpo@{lab}.bench.invalid", "Bench-" + os.urandom(18).hex()
        with rt.gateway.unit(lab_admin, Purpose.ADMINISTRATION) as u:
            service.create_account(u, tenant_id=lab, name="Benchmark DPO", email=email, roles=["lab_dpo"])
        with rt.gateway.auth_unit(source_addr="bench", user_agent="labvault-bench") as u:
            secret = service.enrol_directly(u, email, password)
        if secret is None:
            raise RuntimeError("the benchmark DPO was enrolled without a second factor")
    finally:
        rt.close()
    return email, password, secret


def _check_pages(base_url: str, headers: dict[str, str], paths: list[str]) -> None:
    import httpx

    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0, trust_env=False) as c:
        for path in paths[:5]:
            r = c.get(path)
            if r.status_code != 200 or "<table>" not in r.text or "<svg" not in r.text:
                raise RuntimeError(f"a patient page failed: HTTP {r.status_code}")


def run_web(
    seconds: float,
    *,
    connections: int = 8,
    patients: int = 200,
    seed: int = 7,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    from labvault.synth import LabGenerator

    with tempfile.TemporaryDirectory(prefix="labvault-bench-web-") as tmp:
        home = Path(tmp) / "home"
        env = _child_env(home, os.urandom(24).hex())
        lab, email, password, ids = _prepare_home(env, patients, on_progress)
        gen = LabGenerator(lab, LAB_SEED)
        rich = [pid for i, pid in enumerate(ids) if len(gen.patient(i).results) in RESULTS]
        if not rich:
            raise RuntimeError(f"no generated patient has {RESULTS.start} to {RESULTS.stop - 1} results")
        shown = sum(len(gen.patient(ids.index(p)).results) for p in rich) / len(rich)
        dpo_email, dpo_password, dpo_totp = _add_dpo(env, lab)
        base_url, server, log = start_server(env, Path(tmp))
        try:
            _wait_health(base_url, server, log)
            cookie = {"Cookie": _session_cookie(base_url, email, password)}
            pages = [f"/patients/{pid}" for pid in rich]
            _check_pages(base_url, cookie, pages)
            bearer = {"Authorization": f"Bearer {_bearer_token(base_url, email, password)}"}
            api_paths = [f"/api/v1/tenants/{lab}/patients/{pid}/results" for pid in rich]
            common = {"base_url": base_url, "seconds": seconds, "connections": connections, "seed": seed}
            health = _run_driver({**common, "paths": ["/health"]}, env, "health", on_progress)
            api = _run_driver({**common, "paths": api_paths, "headers": bearer}, env, "api", on_progress)
            cpu0 = _cpu_s(server.pid)
            page = _run_driver({**common, "paths": pages, "headers": cookie}, env, "patient page", on_progress)
            cpu1 = _cpu_s(server.pid)
            # The audit explorer: its first page (100 of the lab's events, at least 1,000 by now:
            # every page read above is one), names resolved, as the lab's DPO sees it.
            dpo = {"Cookie": _session_cookie(base_url, dpo_email, dpo_password, dpo_totp)}
            audit = _run_driver({**common, "paths": ["/dpo/audit"], "headers": dpo}, env, "audit explorer", on_progress)
            if server.poll() is not None:
                raise RuntimeError(f"the server exited during the run: {_tail(log)}")
        finally:
            _stop(server)
    return {
        "bench": "web",
        "page": "GET /patients/{patient_id}",
        "pages_per_s": page["requests_per_s"],
        "p50_ms": page["p50_ms"],
        "p90_ms": page["p90_ms"],
        "p99_ms": page["p99_ms"],
        "max_ms": page["max_ms"],
        "errors": page["errors"],
        "error_kinds": page["error_kinds"],
        "pages": page["requests"],
        "results_per_page": round(shown, 1),
        "bytes_per_page": page["bytes_per_response"],
        "connections": connections,
        "seconds": page["seconds"],
        "server_cpu_ms_per_page": _per_request(cpu1 - cpu0, page["requests"]),
        "api_requests_per_s": api["requests_per_s"],
        "api_p99_ms": api["p99_ms"],
        "api_errors": api["errors"],
        "ratio_to_api": round(page["requests_per_s"] / api["requests_per_s"], 2) if api["requests_per_s"] else None,
        "health_requests_per_s": health["requests_per_s"],
        "health_p99_ms": health["p99_ms"],
        "audit_pages_per_s": audit["requests_per_s"],
        "audit_p50_ms": audit["p50_ms"],
        "audit_p99_ms": audit["p99_ms"],
        "audit_errors": audit["errors"],
        "pages_read_before_audit": page["requests"],
    }
