"""The table from each requirement id to the tests that prove it: docs/compliance.md.

A test names the requirements it proves at the start of its docstring, before a colon:
``\"\"\"F2, E2: a support account reads nothing without an approved grant.\"\"\"``. This script
reads every test function's docstring (test modules under tests/), collects the ids, and writes
the table; ``--check`` exits 1 when docs/compliance.md differs from what the tests say, so the
table cannot drift from the suite.

    python scripts/compliance.py            # rewrite docs/compliance.md
    python scripts/compliance.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "compliance.md"

# Requirement ids, their one-line summary, and what is not (yet) covered: the gaps, said plainly.
REQUIREMENTS: list[tuple[str, str, str]] = [
    ("A1", "every export, migration, extraction or support query needs the lab's signed instruction", ""),
    ("A2", "field allow-list enforced: the output schema is the allow-list", ""),
    ("A3", "no full-dump path: no export entry point without an instruction filter", ""),
    ("A4", "free text excluded unless the instruction lists it", ""),
    ("A5", "volume pre-flight against the expected population; a deviation blocks", ""),
    ("A6", "a possibly unlawful instruction (non-EEA destination without basis) is held", ""),
    ("A8", "no vendor-own purposes: a purpose named by the vendor unlocks nothing on a real lab", ""),
    (
        "B1",
        "migration state machine: scoping, dry run, four-eyes approval, run, reconciliation, purge, certificate",
        "",
    ),
    ("B2", "staging encrypted; transfers authenticated and encrypted; no anonymous share", ""),
    ("B3", "staging copies deleted at the deadline (crypto-shred), event with hashes", ""),
    ("B4", "signed reconciliation report (counts per record type, field and link)", ""),
    ("B5", "operators get named just-in-time access to one lab and one migration", ""),
    ("C1", "at rest: database, files, backups, exports encrypted per lab; no planted NIR in raw storage", ""),
    ("C2", "TLS everywhere; authenticated feeds; no clear data endpoint", ""),
    ("C3", "key rotation; crypto-erasure that no other process undoes", ""),
    ("C4", "pseudonymised non-production copies", "synthetic labs only; no pseudonymised copy of a real lab yet"),
    ("D1", "retention per category set by the lab, automatic purge", ""),
    ("D2", "end of contract: return or delete, with a certificate", ""),
    ("D3", "a legal hold needs a recorded basis", ""),
    ("E1", "named individual accounts only; concurrent use detected", ""),
    ("E2", "MFA for vendor staff and admins; every route but health and login answers 401", ""),
    ("E3", "throttling and lockout; memory-hard password hashing", ""),
    ("E4", "leavers deprovisioned: sessions and tokens revoked", ""),
    ("F1", "tenant isolation in the data layer (RLS and per-lab keys)", ""),
    ("F2", "no standing vendor access: grants approved by the lab, scoped, time-boxed, logged", ""),
    ("F3", "access only after a recorded confidentiality commitment", ""),
    ("F4", "sub-processor registry with notice and objection", "not built"),
    ("G1", "events for logins, MFA, reads and writes, exports, permission changes, key operations", ""),
    ("G2", "event fields: author, UTC time, operation, reference (never content), lab, source, outcome", ""),
    ("G3", "rolling retention of the logs with a justification beyond a year", ""),
    ("G4", "logs append-only, hash-chained, signed; the vendor cannot rewrite them", ""),
    ("G5", "only auditor roles query logs; no identity oracle for vendor staff", ""),
    ("G6", "the lab exports its own logs and checkpoints", ""),
    ("H1", "monitoring rules with acknowledgement and escalation", ""),
    ("H2", "every external report opens a ticket that cannot close without an assessment", ""),
    ("H3", "a leaked sample traced to its lab and export by keyed hashes", ""),
    (
        "H4",
        "internal whistle-blowing channel",
        "an employee's report is an outside report of source 'employee' in the same register; "
        "no anonymous submission form yet",
    ),
    ("H5", "patch management, CVE scan", "not built"),
    ("I1", "register of every breach", ""),
    ("I2", "processor to controller notification without undue delay", ""),
    ("I3", "per-controller Art. 33 draft, 72-hour clock", ""),
    ("I4", "Art. 34 kit: affected list, plain-language message", ""),
    ("I5", "multi-lab breach: each lab receives only its own scope", ""),
    ("J1", "a lab is not activated until its contract covers every Art. 28(3) item", "not built"),
    ("J2", "machine-readable Annex II drives instruction allow-lists", "not built"),
    ("K", "Art. 30(2) record per controller", "not built"),
    ("L", "data subject requests forwarded to the controller; controller tools", "not built"),
    ("M1", "HDS hosting, EEA storage", "EEA destinations enforced in instructions; hosting is outside the code"),
    ("M2", "INS with OID and traits; only a qualified INS transmitted; test OID refused in production", ""),
    ("M3", "NIR never a technical or log key", ""),
    ("M4", "retention is the controller's choice", ""),
    ("M5", "HPRIM Santé records H, P, OBR, OBX, C, L", ""),
]
IDS = [r[0] for r in REQUIREMENTS]
_ID = r"(?:[A-M]\d{1,2}|K|L)"
LEAD = re.compile(rf"^\s*({_ID}(?:\s*,\s*{_ID})*)\s*:")


def ids_of(doc: str | None) -> list[str]:
    """The requirement ids a docstring names before its first colon, or none."""
    if not doc:
        return []
    m = LEAD.match(doc)
    if not m:
        return []
    return [i.strip() for i in m.group(1).split(",")]


def collect(tests: Path) -> dict[str, list[str]]:
    """Requirement id -> sorted test references (path::Class::function)."""
    found: dict[str, set[str]] = {i: set() for i in IDS}
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name

        def visit(node: ast.AST, prefix: str, rel: str = rel) -> None:
            for child in getattr(node, "body", []):
                if isinstance(child, ast.ClassDef) and child.name.startswith("Test"):
                    visit(child, f"{prefix}{child.name}::")
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.name.startswith("test"):
                    for rid in ids_of(ast.get_docstring(child)):
                        if rid not in found:
                            raise SystemExit(f"{rel}::{prefix}{child.name}: unknown requirement id '{rid}'")
                        found[rid].add(f"{rel}::{prefix}{child.name}")

        visit(tree, "")
    return {k: sorted(v) for k, v in found.items()}


def render(found: dict[str, list[str]]) -> str:
    lines = [
        "# Compliance: each requirement and the tests that prove it",
        "",
        "Requirement ids are those of the project's requirements catalogue (GDPR Arts 28-34, the",
        "standard contractual clauses of Decision (EU) 2021/915, the CNIL, the French identity rules).",
        "A test names the ids it proves at the start of its docstring; this file is written from the",
        "suite by `python scripts/compliance.py`, and `tests/test_compliance_table.py` fails when it is",
        "stale. A requirement without a test is a gap, and the last column says what is missing.",
        "",
        "| id | requirement | tests | gap |",
        "|---|---|---|---|",
    ]
    for rid, summary, gap in REQUIREMENTS:
        tests = found.get(rid, [])
        cell = "<br>".join(f"`{t}`" for t in tests) if tests else "none"
        note = gap or ("" if tests else "no test names it yet")
        lines.append(f"| {rid} | {summary} | {cell} | {note} |")
    covered = sum(1 for rid in IDS if found.get(rid))
    lines += ["", f"{covered} of {len(IDS)} requirements have at least one test.", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render(collect(ROOT / "tests"))
    if "--check" in argv:
        current = TABLE.read_text(encoding="utf-8") if TABLE.exists() else ""
        if current != text:
            print("docs/compliance.md is stale: run python scripts/compliance.py", file=sys.stderr)
            return 1
        return 0
    TABLE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
