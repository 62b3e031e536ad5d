"""What is told: the processor's notice to each lab (SCC 2021/915 clause 9.2) and each lab's
Art. 33(3) draft to the authority, in French, as JSON (the CNIL notification form's fields), HTML
and PDF (WeasyPrint, as the lab's reports: ``labvault.lab.render``).

Every body is built from one lab's scope only (its counts, categories, fields, its own DPO): no
other lab's id, count or reference ever enters it (I5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from labvault.lab.render import fr_date, fr_moment, html_to_pdf

# The French words of what was exposed (the analysis's column kinds) and of the categories.
FIELD_WORDS = {
    "nir": "numéro de sécurité sociale (NIR)",
    "family_name": "nom",
    "birth_name": "nom de naissance",
    "given_names": "prénoms",
    "full_name": "nom et prénom",
    "names": "nom et prénom",
    "birth_date": "date de naissance",
    "sex": "sexe",
    "date": "dates d'examen",
    "code": "codes d'analyses",
    "label": "libellés d'analyses",
    "value": "résultats d'analyses",
    "results": "résultats d'analyses",
    "unit": "unités",
    "text": "commentaires libres (pouvant mentionner des pathologies)",
    "free_text": "commentaires libres (pouvant mentionner des pathologies)",
    "export_id": "identifiants techniques",
    "link": "identifiants techniques",
}
CATEGORY_WORDS = {
    "hiv": "VIH",
    "viral_hepatitis": "hépatites virales",
    "hepatitis": "hépatites virales",
    "genetics": "génétique",
    "pregnancy": "grossesse",
    "oncology": "oncologie",
}
KIND_WORDS = {
    "confidentiality": "violation de la confidentialité",
    "integrity": "violation de l'intégrité",
    "availability": "violation de la disponibilité",
}


def field_words(fields: Sequence[str]) -> list[str]:
    return sorted({FIELD_WORDS.get(f, f) for f in fields if f not in ("other",)})


def category_words(categories: Mapping[str, int]) -> list[str]:
    return sorted(CATEGORY_WORDS.get(c, c) for c, n in categories.items() if n)


def consequences(categories: Mapping[str, int], fields: Sequence[str]) -> list[str]:
    """The likely consequences for the people, from what was exposed."""
    out = ["hameçonnage (phishing) et tentatives d'escroquerie utilisant les données divulguées"]
    kinds = set(fields)
    if "nir" in kinds:
        out.append("usurpation d'identité et utilisation frauduleuse du numéro de sécurité sociale")
    if categories or kinds & {"value", "results", "text", "free_text", "label", "code"}:
        out.append("atteinte à la vie privée par la divulgation de données de santé")
    if any(categories.get(c) for c in ("hiv", "genetics", "pregnancy", "oncology", "viral_hepatitis", "hepatitis")):
        out.append("risque de discrimination ou de stigmatisation (catégories sensibles exposées)")
    out.append("détresse psychologique")
    return out


def notice_body(
    *,
    incident: Mapping[str, Any],
    lab: Mapping[str, Any],
    part: Mapping[str, Any],
    fields: Sequence[str],
    contact: Mapping[str, str],
    measures: Sequence[str],
) -> dict[str, Any]:
    """The processor's notice to one lab (SCC 2021/915 clause 9.2): this lab's scope only."""
    cats = dict(part.get("categories") or {})
    return {
        "document": "notice",
        "legal_basis": "RGPD art. 33(2) ; clauses contractuelles types 2021/915, clause 9.2",
        "incident_id": incident["incident_id"],
        "lab": {"id": lab["id"], "name": lab["name"], "finess": lab.get("finess", "")},
        "title": incident["title"],
        "nature": KIND_WORDS.get(incident["kind"], incident["kind"]),
        "processor_aware_at": incident["aware_at"],
        "occurred_at": incident.get("occurred_at"),
        "people": part.get("patients"),
        "records": part.get("records"),
        "categories": cats,
        "category_words": category_words(cats),
        "fields": sorted(fields),
        "field_words": field_words(fields),
        "consequences": consequences(cats, fields),
        "measures": list(measures),
        "severity": part.get("severity"),
        "contact": dict(contact),
    }


def art33_body(
    *,
    incident: Mapping[str, Any],
    lab: Mapping[str, Any],
    part: Mapping[str, Any],
    notice: Mapping[str, Any] | None,
    dpo: tuple[str, str] | None,
    measures_taken: Sequence[str],
    measures_proposed: Sequence[str],
    delay_reason: str | None,
) -> dict[str, Any]:
    """The Art. 33(3) draft of one lab, after the CNIL notification form's sections."""
    cats = dict(part.get("categories") or {})
    fields = list((notice or {}).get("fields") or [])
    return {
        "document": "art33",
        "formulaire": "Notification d'une violation de données personnelles (CNIL)",
        "incident_id": incident["incident_id"],
        "responsable_du_traitement": {
            "identifiant": lab["id"],
            "nom": lab["name"],
            "finess": lab.get("finess", ""),
            "adresse": lab.get("address", ""),
        },
        "delegue_protection_donnees": {"nom": dpo[0], "courriel": dpo[1]} if dpo else None,
        "sous_traitant_en_cause": bool(part.get("owner") == "platform"),
        "nature_de_la_violation": {
            "type": KIND_WORDS.get(incident["kind"], incident["kind"]),
            "description": incident["title"],
            "date_de_la_violation": incident.get("occurred_at"),
            "date_de_prise_de_connaissance": part["aware_at"],
        },
        "categories_de_personnes": ["patients du laboratoire"],
        "nombre_approximatif_de_personnes": part.get("patients"),
        "categories_de_donnees": field_words(fields) or ["données d'identification", "données de santé"],
        "categories_sensibles": category_words(cats),
        "nombre_approximatif_d_enregistrements": part.get("records"),
        "consequences_probables": consequences(cats, fields),
        "mesures_prises": list(measures_taken) or list((notice or {}).get("measures") or []),
        "mesures_envisagees": list(measures_proposed),
        "information_des_personnes": part.get("art34") or "à décider",
        "gravite_enisa": part.get("severity"),
        "motifs_du_retard": delay_reason,
    }


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fr_date=fr_date, fr_moment=fr_moment, fr_iso=_fr_iso)
    return env


def _fr_iso(value: str | None) -> str:
    from datetime import datetime

    if not value:
        return "non connue"
    return fr_moment(datetime.fromisoformat(value))


def render_html(body: Mapping[str, Any]) -> str:
    """A notice or a draft as HTML (French)."""
    template = "notice.html" if body.get("document") == "notice" else "art33.html"
    return environment().get_template(template).render(b=body)


def render_pdf(body: Mapping[str, Any]) -> bytes:
    return html_to_pdf(render_html(body))
