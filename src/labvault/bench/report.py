"""Report benchmark: single-page patient reports per second, against WeasyPrint alone.

Generated patients (``labvault.synth``, no database) give requests; each request with at most
``MAX_LINES`` results becomes a ``Report``. Measured in the same run, over the same reports,
alternating rounds so that both phases see the same machine:
- ``reports_per_s``: ``report_pdf(report)`` (the model to HTML through Jinja2, then WeasyPrint);
- ``weasyprint_alone_per_s``: WeasyPrint writing the PDF of the same HTML, made beforehand;
- ``ratio``: the first over the second (the target is >= 0.8).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from labvault.domain.models import Tenant
from labvault.domain.report import Report
from labvault.lab.report import report_from_domain, report_html, report_pdf
from labvault.synth import LabGenerator
from labvault.synth import panels as P

MAX_LINES = 10  # results that fit on one A4 page with the header, identity and specimens

_SECTIONS = {
    **{a.code: "Hématologie" for a in P.BLOOD_COUNT},
    **{a.code: "Biochimie" for a in (*P.METABOLIC, *P.LIPIDS)},
    **{a.code: "Urines" for a in P.URINALYSIS},
}


def make_reports(n: int, *, seed: int = 7, tenant_id: str = "bench-report") -> list[Report]:
    """``n`` reports of generated requests (each of at most ``MAX_LINES`` results)."""
    gen = LabGenerator(tenant_id, seed)
    tenant = Tenant(id=tenant_id, name="Laboratoire de biologie médicale des Tilleuls", finess="750012345")
    prescribers = {p.prescriber_id: p for p in gen.prescribers}
    out: list[Report] = []
    index = 0
    while len(out) < n:
        rec = gen.patient(index)
        index += 1
        for req in rec.requests:
            results = [r for r in rec.results if r.request_id == req.request_id]
            if not results or len(results) > MAX_LINES:
                continue
            specimens = [s for s in rec.specimens if s.request_id == req.request_id]
            issued = max((r.validated_at for r in results if r.validated_at), default=req.requested_at)
            out.append(
                report_from_domain(
                    report_id=f"CR-{len(out) + 1}",
                    version=1,
                    tenant=tenant,
                    lab_address="12 rue des Tilleuls, 75012 Paris",
                    identity=rec.identity,
                    request=req,
                    specimens=specimens,
                    results=results,
                    prescriber=prescribers.get(req.prescriber_id or ""),
                    issued_at=issued + timedelta(minutes=5),
                    sections=_SECTIONS,
                )
            )
            if len(out) == n:
                break
    return out


def run_report(
    n: int, *, rounds: int = 2, seed: int = 7, on_progress: Callable[[str, int], None] | None = None
) -> dict[str, object]:
    from weasyprint import HTML  # type: ignore[import-untyped]

    from labvault.lab.render import url_fetcher

    reports = make_reports(n, seed=seed)
    pages = 0
    import pypdfium2  # type: ignore[import-untyped]

    for r in reports[:10]:  # the reports measured are single pages
        pages = max(pages, len(pypdfium2.PdfDocument(report_pdf(r))))
    htmls = [report_html(r) for r in reports]
    fetcher = url_fetcher()
    HTML(string=htmls[0], url_fetcher=fetcher).write_pdf()  # fonts loaded before either phase is timed
    ours = alone = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for r in reports:
            report_pdf(r)
        ours += time.perf_counter() - t0
        if on_progress:
            on_progress("report_pdf", n)
        t0 = time.perf_counter()
        for h in htmls:
            HTML(string=h, url_fetcher=fetcher).write_pdf()
        alone += time.perf_counter() - t0
        if on_progress:
            on_progress("weasyprint", n)
    done = n * rounds
    reports_per_s = done / ours
    alone_per_s = done / alone
    return {
        "reports": n,
        "rounds": rounds,
        "max_pages": pages,
        "reports_per_s": round(reports_per_s, 2),
        "weasyprint_alone_per_s": round(alone_per_s, 2),
        "ratio": round(reports_per_s / alone_per_s, 3),
    }
