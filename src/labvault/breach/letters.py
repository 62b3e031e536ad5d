"""Art. 34 letters: one plain-French letter per affected patient, as a PDF (WeasyPrint): what
happened, what data, what to watch for, whom to contact. Addressed with the patient's name and
address opened under ``Purpose.BREACH`` by the lab's own DPO (``labvault.access.incidents``).

Files are named by their rank (``lettre-00001.pdf``), never by a name; nothing is logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labvault.breach.notices import category_words, environment, field_words
from labvault.domain.models import Identity
from labvault.lab.render import html_to_pdf


def letter_context(
    person: Identity,
    *,
    lab: Mapping[str, Any],
    fields: Sequence[str],
    categories: Mapping[str, int],
    dpo: tuple[str, str] | None,
    when: str,
) -> dict[str, Any]:
    given = person.used_given_name or person.first_given or person.given_names
    return {
        "name": f"{given} {person.family_name}".strip(),
        "address": [line.strip() for line in (person.address or "").replace(";", "\n").splitlines() if line.strip()],
        "lab": dict(lab),
        "fields": field_words(fields) or ["données d'identification", "résultats d'analyses"],
        "sensitive": bool(category_words(categories)),
        "nir": "nir" in fields,
        "dpo": {"name": dpo[0], "email": dpo[1]} if dpo else None,
        "when": when,
    }


def render_letter(context: Mapping[str, Any]) -> str:
    return environment().get_template("letter.html").render(l=context)


def render_letters(
    people: Sequence[Identity],
    *,
    lab: Mapping[str, Any],
    fields: Sequence[str],
    categories: Mapping[str, int],
    dpo: tuple[str, str] | None,
    when: str,
) -> list[bytes]:
    """One PDF per person, in memory (the web and the API hand them out without a file on disk)."""
    return [
        html_to_pdf(render_letter(letter_context(p, lab=lab, fields=fields, categories=categories, dpo=dpo, when=when)))
        for p in people
    ]


def write_letters(
    people: Sequence[Identity],
    out_dir: Path,
    *,
    lab: Mapping[str, Any],
    fields: Sequence[str],
    categories: Mapping[str, int],
    dpo: tuple[str, str] | None,
    when: str,
) -> list[Path]:
    """One PDF per person in ``out_dir`` (created; its files named by rank only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, person in enumerate(people, 1):
        html = render_letter(letter_context(person, lab=lab, fields=fields, categories=categories, dpo=dpo, when=when))
        path = out_dir / f"lettre-{n:05d}.pdf"
        path.write_bytes(html_to_pdf(html))
        paths.append(path)
    return paths
