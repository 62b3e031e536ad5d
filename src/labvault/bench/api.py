"""API read benchmark: authenticated, audited, decrypted reads of a patient's results over HTTP.

The parent process builds a scratch home (one generated lab, one enrolled biologist), starts
``labvault serve`` on loopback as a child process, logs in once and makes a read-only bearer
token, then runs the load generator as a second child process (``python -m labvault.bench.api
--drive``): C connections, each a thread with its own keep-alive httpx transport, asking for the
results of random patients for S seconds. Each request is authenticated (bearer token), checked
by the gateway, decrypted with the lab's key and recorded in the audit trail by the server.

The same loop against ``/health`` (no authentication, no database) runs first, in the same run,
as the baseline of what the HTTP stack alone costs. Latency is measured by the load generator,
per request, from sending to the full response body. The load generator shares the machine with
the server: its CPU time per request is reported beside the server's. The server is always
terminated.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
LAB_SEED = 2021
SERVER_START_TIMEOUT = 60.0
MAX_RATE = 50_000  # requests per second and connection: a bound on the loop's count, never reached
_CLEARED_ENV = (
    "LABVAULT_DATABASE_URL",
    "LABVAULT_CONFIG",
    "LABVAULT_KEY_PROVIDER",
    "LABVAULT_PKCS11_MODULE",
    "LABVAULT_PKCS11_TOKEN",
    "LABVAULT_PKCS11_PIN",
    "LABVAULT_AS",
    "LABVAULT_AS_PASSWORD",
    "LABVAULT_AS_TOTP",
)

Progress = Callable[[str, float, float, str], None]  # (phase, done, total, note)


# -- the load generator (second process) ---------------------------------------------------------
def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def drive(
    base_url: str,
    paths: list[str],
    *,
    seconds: float,
    connections: int,
    headers: dict[str, str] | None = None,
    seed: int = 1,
    report: Callable[[int, float], None] | None = None,
) -> dict[str, object]:
    """GET random ``paths`` on ``base_url`` over ``connections`` keep-alive connections for ``seconds``.

    Stops by itself: each connection stops at the deadline or after ``seconds * MAX_RATE``
    requests, and no request waits longer than its timeout. Returns the figures.
    """
    import httpx

    if not base_url.startswith(f"http://{HOST}:"):
        raise ValueError("the load generator only talks to the loopback address")
    wait_s = max(5.0, seconds + 5.0)
    timeout = httpx.Timeout(wait_s)
    per_connection = max(1, int(seconds * MAX_RATE))
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[dict[str, int]] = [{} for _ in range(connections)]
    clock = {"start": 0.0, "end": 0.0}

    def start_clock() -> None:  # runs once, when every connection is open, before any is released
        clock["start"] = time.perf_counter()
        clock["end"] = clock["start"] + seconds

    start_line = threading.Barrier(connections + 1, action=start_clock)
    stop = threading.Event()

    # Requests are built once and sent through httpx's transport: the ``Client`` layer (cookies,
    # redirects, URL merging) costs the load generator more CPU than the server's /health does.
    ext = {"timeout": timeout.as_dict()}
    prepared = [httpx.Request("GET", base_url + p, headers=headers, extensions=ext) for p in paths]
    warm_up = httpx.Request("GET", base_url + "/health", extensions=ext)
    received = [0] * connections

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        mine, bad = latencies[k], errors[k]
        size = 0
        with httpx.HTTPTransport(retries=0) as transport:
            try:  # open the connection before the clock starts
                transport.handle_request(warm_up).read()
            except httpx.HTTPError:
                pass
            start_line.wait()
            end = clock["end"]
            for _ in range(per_connection):
                request = rng.choice(prepared)
                t0 = time.perf_counter()
                if t0 >= end or stop.is_set():
                    break
                try:
                    response = transport.handle_request(request)
                    try:
                        size += len(response.read())
                    finally:
                        response.close()
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    bad[str(status)] = bad.get(str(status), 0) + 1
        received[k] = size

    threads = [threading.Thread(target=worker, args=(k,), daemon=True, name=f"drive-{k}") for k in range(connections)]
    for th in threads:
        th.start()
    cpu0 = time.process_time()
    start_line.wait(timeout=60)
    t_start = clock["start"]
    try:
        while alive := [th for th in threads if th.is_alive()]:
            alive[0].join(timeout=0.5)
            if report:
                report(sum(len(x) for x in latencies), time.perf_counter() - t_start)
            if time.perf_counter() > t_start + seconds + wait_s + 5:
                break  # a connection hangs past its timeout: stop waiting, report what was measured
    finally:
        stop.set()
    elapsed = min(time.perf_counter(), clock["end"] + wait_s) - t_start
    ordered = sorted(x for xs in latencies for x in xs)
    kinds: dict[str, int] = {}
    for e in errors:
        for key, n in e.items():
            kinds[key] = kinds.get(key, 0) + n
    n = len(ordered)
    return {
        "requests": n,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(ordered, 50) * 1000, 2),
        "p90_ms": round(_percentile(ordered, 90) * 1000, 2),
        "p99_ms": round(_percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
        "connections": connections,
        "bytes_per_response": round(sum(received) / n) if n else 0,
        "driver_cpu_s": round(time.process_time() - cpu0, 3),
    }


def _drive_main(argv: list[str]) -> int:
    """``python -m labvault.bench.api --drive``: the job (and the bearer token) come on stdin as JSON."""
    parser = argparse.ArgumentParser(prog="python -m labvault.bench.api")
    parser.add_argument("--drive", action="store_true", required=True)
    parser.parse_args(argv)
    job = json.loads(sys.stdin.read())

    def report(done: int, elapsed: float) -> None:
        print(json.dumps({"progress": done, "elapsed": round(elapsed, 2)}), flush=True)

    out = drive(
        job["base_url"],
        job["paths"],
        seconds=job["seconds"],
        connections=job["connections"],
        headers=job.get("headers"),
        seed=job.get("seed", 1),
        report=report,
    )
    print(json.dumps({"result": out}), flush=True)
    return 0


# -- the parent: scratch home, server, login, load phases ----------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _child_env(home: Path, passphrase: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
    env["LABVAULT_HOME"] = str(home)
    env["LABVAULT_PASSPHRASE"] = passphrase
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _prepare_home(env: dict[str, str], patients: int, on_progress: Progress | None) -> tuple[str, str, str, list[str]]:
    """Init the home, one lab of generated patients, one enrolled biologist (no MFA for that role)."""
    from labvault.access import Principal, Purpose
    from labvault.accounts import service
    from labvault.config import Settings
    from labvault.runtime import init_home, open_runtime
    from labvault.synth import LabGenerator
    from labvault.synth.load import SYNTHETIC_RETENTION, ensure_labs, load_lab

    settings = Settings.from_env(env)
    init_home(settings, "Bench Operator", "operator@bench.invalid")
    rt = open_runtime(settings)
    try:
        (lab,) = ensure_labs(rt.gateway, rt.operator, 1, retention=SYNTHETIC_RETENTION)
        done = [0]

        def batch(n: int) -> None:
            done[0] += n
            if on_progress:
                on_progress("setup", done[0], patients, f"{lab}: {done[0]} patients")

        load_lab(rt.gateway, rt.operator, lab, patients=patients, seed=LAB_SEED, on_batch=batch)
        email = f"biologist@{lab}.bench.invalid"
        password = "Bench-" + os.urandom(18).hex()
        # the platform invites the lab's first lab_admin, who adds the lab's biologist
        with rt.unit(Purpose.ADMINISTRATION) as u:
            admin = service.create_account(
                u,
                tenant_id=lab,
                name="Benchmark Lab Admin",
                email=f"lab-admin@{lab}.bench.invalid",
                roles=["lab_admin"],
            )
        lab_admin = Principal(admin.account_id, "Benchmark Lab Admin", lab, frozenset({"lab_admin"}))
        with rt.gateway.unit(lab_admin, Purpose.ADMINISTRATION) as u:
            service.create_account(u, tenant_id=lab, name="Benchmark Biologist", email=email, roles=["biologist"])
        with rt.gateway.auth_unit(source_addr="bench", user_agent="labvault-bench") as u:
            if service.enrol_directly(u, email, password) is not None:
                raise RuntimeError("the benchmark account unexpectedly needs MFA")
    finally:
        rt.close()
    gen = LabGenerator(lab, LAB_SEED)
    ids = [gen.patient(i).identity.patient_id for i in range(patients)]
    return lab, email, password, ids


def _wait_health(base_url: str, server: subprocess.Popen, log: Path) -> None:
    import httpx

    until = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < until:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: {_tail(log)}")
        try:
            if httpx.get(base_url + "/health", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /health within {SERVER_START_TIMEOUT:.0f} s: {_tail(log)}")


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text("utf-8", errors="replace")[-chars:].strip() or "(no output)"
    except OSError:
        return "(no output)"


def _bearer_token(base_url: str, email: str, password: str) -> str:
    """Log in (session cookie + CSRF token), then make a read-only bearer token for one day."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as c:
        r = c.post("/api/v1/auth/login", json={"email": email, "password": password})
        if r.status_code != 200 or r.json().get("mfa_required"):
            raise RuntimeError(f"login failed: HTTP {r.status_code} {r.text[:200]}")
        csrf = r.json()["csrf_token"]
        r = c.post("/api/v1/tokens", json={"scopes": ["read"], "days": 1}, headers={"X-CSRF-Token": csrf})
        if r.status_code != 201:
            raise RuntimeError(f"token creation failed: HTTP {r.status_code} {r.text[:200]}")
        return r.json()["token"]


def _check_reads(base_url: str, headers: dict[str, str], paths: list[str]) -> float:
    """A few real reads before the clock starts: 200, decrypted results. Returns results per read."""
    import httpx

    counts = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0, trust_env=False) as c:
        for path in paths[:10]:
            r = c.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"a results read failed: HTTP {r.status_code} {r.text[:200]}")
            body = r.json()
            if body and not all(isinstance(x, dict) and x.get("code") and "value_num" in x for x in body):
                raise RuntimeError("a results read returned something other than decrypted results")
            counts.append(len(body))
    if not any(counts):
        raise RuntimeError("the sampled patients have no results: nothing would be decrypted")
    return sum(counts) / len(counts)


def _cpu_s(pid: int) -> float:
    import psutil

    try:
        c = psutil.Process(pid).cpu_times()
        return c.user + c.system
    except psutil.Error:
        return 0.0


def _run_driver(job: dict[str, object], env: dict[str, str], phase: str, on_progress: Progress | None) -> dict:
    """The load generator as a child process; its progress lines and result come on its stdout."""
    seconds = float(job["seconds"])  # type: ignore[arg-type]
    result = None
    with (
        tempfile.TemporaryFile("w+") as err,
        subprocess.Popen(
            [sys.executable, "-m", "labvault.bench.api", "--drive"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
        ) as proc,
    ):
        watchdog = threading.Timer(seconds + 90, proc.kill)  # the loop stops by itself; this is the backstop
        watchdog.daemon = True
        watchdog.start()
        try:
            if proc.stdin is None or proc.stdout is None:
                raise RuntimeError("the load client was started without pipes")
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "progress" in msg and on_progress:
                    on_progress(
                        phase, min(float(msg["elapsed"]), seconds), seconds, f"{phase}: {msg['progress']:,} requests"
                    )
                elif "result" in msg:
                    result = msg["result"]
            proc.wait(timeout=30)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if result is None:
            err.seek(0)
            raise RuntimeError(f"the load generator failed (exit {proc.returncode}): {err.read()[-2000:].strip()}")
    if on_progress:
        on_progress(phase, seconds, seconds, f"{phase}: {result['requests']:,} requests")
    return result


def start_server(env: dict[str, str], tmp: Path) -> tuple[str, subprocess.Popen, Path]:
    """``labvault serve`` on a free loopback port as a child process, its output in ``tmp``: the
    base URL, the process and its log (the caller waits for ``/health`` and stops it)."""
    port = _free_port()
    log = tmp / "server.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "labvault.cli", "serve", "--host", HOST, "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return f"http://{HOST}:{port}", server, log


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_api(
    seconds: float,
    *,
    connections: int = 8,
    patients: int = 200,
    seed: int = 7,
    on_progress: Progress | None = None,
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="labvault-bench-api-") as tmp:
        home = Path(tmp) / "home"
        env = _child_env(home, os.urandom(24).hex())
        lab, email, password, ids = _prepare_home(env, patients, on_progress)

        base_url, server, log = start_server(env, Path(tmp))
        try:
            _wait_health(base_url, server, log)
            headers = {"Authorization": f"Bearer {_bearer_token(base_url, email, password)}"}
            paths = [f"/api/v1/tenants/{lab}/patients/{pid}/results" for pid in ids]
            per_read = _check_reads(base_url, headers, paths)

            common = {"base_url": base_url, "seconds": seconds, "connections": connections, "seed": seed}
            cpu0 = _cpu_s(server.pid)
            health = _run_driver({**common, "paths": ["/health"]}, env, "health", on_progress)
            cpu1 = _cpu_s(server.pid)
            reads = _run_driver({**common, "paths": paths, "headers": headers}, env, "results", on_progress)
            cpu2 = _cpu_s(server.pid)
            if server.poll() is not None:
                raise RuntimeError(f"the server exited during the run: {_tail(log)}")
        finally:
            _stop(server)

    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    return {
        "bench": "api",
        "endpoint": "GET /api/v1/tenants/{tenant}/patients/{patient_id}/results",
        "requests_per_s": reads["requests_per_s"],
        "p50_ms": reads["p50_ms"],
        "p90_ms": reads["p90_ms"],
        "p99_ms": reads["p99_ms"],
        "max_ms": reads["max_ms"],
        "errors": reads["errors"],
        "error_kinds": reads["error_kinds"],
        "requests": reads["requests"],
        "seconds": reads["seconds"],
        "connections": connections,
        "patients": patients,
        "results_per_read": round(per_read, 1),
        "server": {
            "command": "labvault serve",
            "uvicorn": uvicorn.__version__,
            "workers": 1,
            "loop": loop,
            "http": http,
            "database": "sqlite",
            "cpu_ms_per_request": _per_request(cpu2 - cpu1, reads["requests"]),
            "health_cpu_ms_per_request": _per_request(cpu1 - cpu0, health["requests"]),
        },
        "bytes_per_response": reads["bytes_per_response"],
        "driver_cpu_ms_per_request": _per_request(reads["driver_cpu_s"], reads["requests"]),
        "health_requests_per_s": health["requests_per_s"],
        "health_p50_ms": health["p50_ms"],
        "health_p99_ms": health["p99_ms"],
        "health_errors": health["errors"],
        "health_requests": health["requests"],
        "health_driver_cpu_ms_per_request": _per_request(health["driver_cpu_s"], health["requests"]),
    }


def _per_request(cpu_s: float, requests: int) -> float | None:
    return round(cpu_s * 1000 / requests, 3) if requests else None


if __name__ == "__main__":
    sys.exit(_drive_main(sys.argv[1:]))
