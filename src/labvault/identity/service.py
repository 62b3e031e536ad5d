"""Identity vigilance as the lab's staff do it (the RNIV): the queue of messages whose INS or local
identifier points to an identity with other traits, and its resolution; an identity's status;
merges and unmerges. The records are the gateway's (``labvault.access.identities``).

Resolving a queued message reads its sealed bytes again (``labvault.ingest.service.read``) and
stores it with the lab's decision, in one transaction with the record of the decision:

- ``attach``: the conflicting identity is the candidate (or the patient named): the message's
  requests and results go to it;
- ``create``: it is another patient: a new identity is created, without the INS or the local
  identifiers that pointed to the other one (an INS is recorded when the lab qualifies the
  identity: ``change_status``);
- ``reject``: nothing is stored; the sealed bytes are erased and the same message, sent again,
  comes back to the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from labvault.access import identities, matching
from labvault.access.identities import EVIDENCE, HELD, IdentityView, Merge, Queued
from labvault.errors import InvalidInput
from labvault.ingest import intake

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.domain.models import IdentityStatus

ACTIONS = ("attach", "create", "reject")
__all__ = [
    "ACTIONS",
    "EVIDENCE",
    "HELD",
    "IdentityView",
    "Merge",
    "Queued",
    "Resolution",
    "change_status",
    "merge",
    "queue",
    "resolve",
    "show",
    "unmerge",
]


@dataclass(frozen=True, slots=True)
class Resolution:
    item: Queued
    results: int  # results stored (0 when rejected)


def queue(u: Unit, tenant_id: str, *, status: str | None = HELD) -> list[Queued]:
    """The messages waiting (``status`` None: every one, with what became of it)."""
    return identities.listing(u, tenant_id, status=status)


def resolve(
    u: Unit, tenant_id: str, queue_id: str, action: str, *, patient_id: str | None = None, test_mode: bool = False
) -> Resolution:
    """The lab's decision on a queued message (see the module's docstring). ``patient_id``: with
    ``attach``, the identity to attach to instead of the candidate."""
    from labvault.ingest.service import read

    if action not in ACTIONS:
        raise InvalidInput(f"a resolution is one of {', '.join(ACTIONS)}")
    if patient_id is not None and action != "attach":
        raise InvalidInput("a patient is named only to attach the message to it")
    identities.authorise_resolve(u, tenant_id)
    item, key, raw = identities.get(u, tenant_id, queue_id)
    if item.status != HELD:
        raise InvalidInput(f"this message was already {item.status}")
    if action == "reject":
        if key is not None:
            intake.forget_queued(u, tenant_id, key)
        return Resolution(identities.close(u, tenant_id, queue_id, identities.REJECTED, None), 0)
    if not raw or key is None:
        raise InvalidInput("this message's bytes were not kept (received under an instruction): reject it")
    if action == "attach":
        target = patient_id or item.candidate_id
        if target is None:
            raise InvalidInput("no candidate identity: name the patient to attach the message to")
        decision = identities.live_patient(u, tenant_id, target)
    else:
        decision = matching.CREATE
    pieces = read(raw, file=f"identity-queue:{queue_id}", fmt=item.format, test_mode=test_mode)
    envelopes = [p.envelope for p in pieces if p.envelope is not None and p.envelope.key == key]
    if not envelopes:
        raise InvalidInput("this message no longer reads as it did: reject it")
    intake.forget_queued(u, tenant_id, key)
    got = intake.store(u, tenant_id, envelopes[:1], feed=item.feed, on_conflict=decision)
    if got != ["accepted"]:
        raise InvalidInput(f"this message could not be stored ({got[0]})")
    envelope = envelopes[0]
    if action == "attach":
        done = identities.close(u, tenant_id, queue_id, identities.ATTACHED, decision)
    else:
        created = envelope.mapped[0].identity.patient_id if envelope.mapped else None
        done = identities.close(u, tenant_id, queue_id, identities.CREATED, created)
    return Resolution(done, envelope.results)


def show(u: Unit, tenant_id: str, patient_id: str) -> IdentityView:
    return identities.show(u, tenant_id, patient_id)


def change_status(
    u: Unit, tenant_id: str, patient_id: str, to: IdentityStatus | str, *, evidence: str, ins: str | None = None
) -> None:
    identities.change_status(u, tenant_id, patient_id, to, evidence=evidence, ins=ins)


def merge(u: Unit, tenant_id: str, kept_id: str, merged_id: str, *, source: str = "cli") -> Merge:
    return identities.merge(u, tenant_id, kept_id, merged_id, source=source)


def unmerge(u: Unit, tenant_id: str, merged_id: str) -> Merge:
    return identities.unmerge(u, tenant_id, merged_id)
