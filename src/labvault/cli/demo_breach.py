"""The demo's end of the 2021 story: a file cut from a package is found online, and Labvault answers.

NewLIS, the recipient of the lab's migration (step 8), kept its decrypted copy; a file cut from it
(the 2021 columns: name, first name, NIR, birth date, exam, test, result, comment, prescriber) is
"found online", together with rows of a second lab's patients copied outside any instruction and
a few rows of people who are no lab's patients. The vendor's security officer analyses it: each
lab's affected patients counted exactly through its blind indexes (nothing decrypted), the
categories exposed, the source package named by its fingerprinted ids; unmatched rows counted.
The incident opens with its ENISA score, each lab receives its own notice and its 72-hour clock
starts; the monitoring process reminds at 24 hours; each lab's Art. 33 draft is written (JSON,
HTML, PDF) and the first lab's DPO addresses the Art. 34 letters. The vendor's operator asks for
the affected list: refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from labvault.access import Principal, Purpose
from labvault.access.principal import MONITOR
from labvault.accounts import service as accounts
from labvault.breach import analyze as breach
from labvault.breach import incidents
from labvault.breach.reader import open_bytes
from labvault.cli.common import console
from labvault.cli.demo import DEMO_PASSWORD, DemoAccount, lab_admin_of
from labvault.crypto.keys import PLATFORM, atomic_write
from labvault.errors import LabvaultError
from labvault.ids import utcnow
from labvault.synth import LabGenerator
from labvault.synth import leak as leaks

OUTSIDE = 40  # the second lab's patients copied outside any instruction
STRANGERS = 12  # people in the file who are no lab's patients


def _records_of(tenant: str, seed: int, count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Generated patients as a package's records would hold them (identities and results): what a
    copy made outside Labvault of a lab's data looks like to the leak's reader."""
    out: list[dict[str, Any]] = []
    for rec in LabGenerator(tenant, seed).patients(count, start=start):
        ident = rec.identity
        pid = f"outside-{tenant}-{ident.patient_id}"
        out.append(
            {
                "record": "identity",
                "id": pid,
                "nir": ident.nir,
                "family_name": ident.family_name,
                "given_names": ident.given_names,
                "birth_date": ident.birth_date.isoformat(),
                "sex": ident.sex,
            }
        )
        for res in rec.results[:3]:
            out.append(
                {
                    "record": "result",
                    "id": f"outside-{res.result_id}",
                    "patient": pid,
                    "code": res.code,
                    "label": res.label,
                    "value_num": res.value_num,
                    "value_text": res.value_text,
                    "unit": res.unit,
                }
            )
    return out


def _lab_dpo(rt, tenant: str, accounts_list: list[DemoAccount]) -> Principal:
    """The lab's DPO: added by its lab_admin, enrolled, logged in (the one who opens the affected list)."""
    from labvault.cli.demo_migration import _login

    email = f"dpo@{tenant}.demo.invalid"
    password = DEMO_PASSWORD.format(k=len(accounts_list) + 1)
    with rt.gateway.unit(lab_admin_of(rt, tenant), Purpose.ADMINISTRATION) as u:
        accounts.create_account(u, tenant_id=tenant, name=f"Nadia Benali ({tenant})", email=email, roles=["lab_dpo"])
    with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
        secret = accounts.enrol_directly(u, email, password)
    a: DemoAccount = {"tenant": tenant, "role": "lab_dpo", "email": email, "password": password, "totp": secret}
    accounts_list.append(a)
    return _login(rt, a)


def _staff(rt, role: str) -> Principal:
    """The vendor's account of ``role``, acting in this demo process (signed in at step 4)."""
    with rt.unit(Purpose.ADMINISTRATION) as u:
        a = next(a for a in accounts.list_accounts(u, PLATFORM) if a["active"] and role in a["roles"].split(","))
    return Principal(a["account_id"], a["name"], PLATFORM, frozenset(a["roles"].split(",")))


def _expected(flat: Sequence[leaks.Flat]) -> int:
    return len({r.patient for r in flat if r.patient})


def show_breach(
    rt,
    labs: Sequence[str],
    demo_accounts: list[DemoAccount],
    seed: int,
    package: list[dict[str, Any]] | None,
    migration_id: str | None,
) -> None:
    if package is None or migration_id is None or len(labs) < 2:
        console.print("  (no decrypted package from step 8, or a single lab: the leak's replay is skipped)")
        return
    first, second = labs[0], labs[1]
    home: Path = rt.settings.home
    found = home / "found-online"

    # The file "found online": the NewLIS copy's rows, a second lab's rows copied outside any
    # instruction, and people who are no lab's patients (a generator of another, unknown lab).
    outside = _records_of(second, seed, OUTSIDE)
    strangers = _records_of("lab-unknown", seed + 99, STRANGERS)
    data, name, flat = leaks.cut([*package, *outside, *strangers], "semicolon", seed=seed)
    atomic_write(found / name, data)
    rows_first = [r for r in flat if r.patient and not r.patient.startswith("outside-")]
    rows_second = [r for r in flat if r.patient and r.patient.startswith(f"outside-{second}-")]
    console.print(
        f"  February 2021, replayed: {found / name} ({len(data):,} bytes, {len(flat):,} rows, semicolons, "
        "cp1252, the 2021 columns) circulates; it came from nowhere the software knows",
        highlight=False,
    )

    security, operator = _staff(rt, "security_officer"), _staff(rt, "operator")

    analysis, parts = breach.analyze(rt.gateway, security, [open_bytes(data, name)])
    console.print(
        f"  labvault breach analyze {name}: {analysis.rows_total:,} rows in {analysis.seconds or 0:.2f} s, "
        f"{analysis.rows_matched:,} matched, {analysis.rows_unmatched:,} unmatched (counted, never guessed), "
        f"{analysis.rows_ambiguous:,} ambiguous",
        highlight=False,
    )
    expected = {first: _expected(rows_first), second: _expected(rows_second)}
    for p in parts:
        src = p.source.to_json() if p.source else None
        where = (
            f"source: package {src['package_id']} ({src['method']}, score {src['score']})"
            if src
            else "source: no package of the lab explains it (left outside any instruction)"
        )
        exact = expected.get(p.tenant_id)
        check = "" if exact is None else (" = the file's own" if exact == p.patients else f" (the file holds {exact})")
        cats = ", ".join(f"{k} {v}" for k, v in sorted(p.categories.items())) or "none named"
        console.print(
            f"    {p.tenant_id}: {p.patients} patients{check}, {p.records} results; sensitive: {cats}; {where}",
            highlight=False,
        )
    named = next((p.source for p in parts if p.source and p.source.package_id == migration_id), None)
    if named is not None:
        how = {
            "fingerprint": "its rows carry the export ids only that package's key makes",
            "canary": "it holds the canary planted in that package alone",
            "selection": "its rows fit that package's selection (period, tests, fields) and no other's",
        }.get(named.method, named.method)
        console.print(f"  {first}'s part came from package {migration_id}, NewLIS's copy: {how}")

    # The incident: the security officer's register entry, the notices, each lab's clock.
    now = utcnow()
    with rt.gateway.unit(security, Purpose.BREACH) as u:
        inc = incidents.open_incident(
            u,
            title="Fichier de résultats diffusé en ligne",
            aware_at=now,
            analysis_id=analysis.analysis_id,
            facts={
                "facts": "Un fichier de résultats a été trouvé en ligne.",
                "effects": "Identités, NIR et résultats d'analyses exposés.",
                "remedial": "Signalement de la page, demande de retrait, clés du destinataire révoquées.",
            },
        )
        incidents.send_notices(u, inc.incident_id)
    sev = inc.severity or {}
    console.print(
        f"  labvault incident open --analysis {analysis.analysis_id}: {inc.incident_id}, ENISA severity "
        f"{sev.get('score')} ({sev.get('level')}); labvault incident notice: each lab receives its own scope",
        highlight=False,
    )
    with rt.gateway.unit(MONITOR, Purpose.MONITORING) as u:
        from labvault.monitoring.dispatch import remind_incidents

        sent = remind_incidents(u, now)
        later = remind_incidents(u, now + timedelta(hours=24, minutes=1))
    console.print(
        f"  the monitoring process: {sum(r.kind == 'notice' for r in sent)} notices raised on the labs' channels; "
        f"24 hours later, {sum(r.kind == 'reminder-24h' for r in later)} reminders (48 hours left)"
    )

    # Each lab's side: its clock, its Art. 33 draft; the first lab's DPO writes the letters.
    out = home / "breach"
    for lab in (first, second):
        dpo = _lab_dpo(rt, lab, demo_accounts)
        with rt.gateway.unit(dpo, Purpose.BREACH) as u:
            part = u.incident(inc.incident_id, lab).part(lab)
            u.incident_decide(
                inc.incident_id, lab, decision="notify", reasoning="Données de santé et NIR exposés publiquement."
            )
            version = incidents.draft(u, inc.incident_id, lab)
            for fmt in ("json", "html", "pdf"):
                atomic_write(out / lab / f"art33-v{version.version}.{fmt}", incidents.render(version, fmt))
            left = part.deadline - now
            console.print(
                f"    {lab}: clock started {part.aware_at:%H:%M} UTC, {left.total_seconds() / 3600:.0f} h left; "
                f"Art. 33 draft v{version.version} ({version.body.get('phase', 'initial')}) written to "
                f"{out / lab}/art33-v{version.version}.{{json,html,pdf}}",
                highlight=False,
            )
            if lab == first:
                written = incidents.write_letters(u, inc.incident_id, lab, out / lab / "lettres")
                console.print(
                    f"    {lab}: {len(written)} Art. 34 letters (one PDF per affected patient, plain French), "
                    f"addressed by the lab's DPO under the incident's purpose: {out / lab / 'lettres'}",
                    highlight=False,
                )
        draft_text = (out / lab / f"art33-v{version.version}.json").read_text()
        other = second if lab == first else first
        console.print(
            f"    {lab}'s draft names {other}: {'YES' if other in draft_text else 'no'} (each lab its own scope)"
        )
    try:
        with rt.gateway.unit(operator, Purpose.BREACH) as u:
            u.affected_patients(first, analysis.analysis_id)
        console.print("  the vendor's operator asks for the affected list: ALLOWED (this must not happen)")
    except LabvaultError as exc:
        console.print(f"  the vendor's operator asks for the affected list: refused ({exc})")
