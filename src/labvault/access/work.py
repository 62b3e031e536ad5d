"""The lab's daily work: requests entered by hand, specimens and their life, results entered by
hand, technical then biological validation, critical values' call-back tasks.

Each method authorises one action of the policy table (``request:enter``, ``specimen:event``,
``result:enter``, ``result:validate:technical``, ``result:validate:biological``,
``callback:manage``, ``callback:read``: lab roles only, never a vendor role), seals and opens
through the lab's keys, and records an audit event naming ids only, never a value.

Validation: technical validation by a technician or a biologist (the one who entered the result
may validate it technically: technicians check their own runs); biological validation by a
biologist who did not enter the result. A biologist who validated a result technically may
validate it biologically, as long as someone else entered it. Validating does not add a version
(the value does not change): the result row records who validated it, and biological validation
seals the validating biologist and time with the value and makes the result final.

A specimen's moves (``MOVES``): collected -> received or rejected; received -> in-analysis, stored
or rejected; in-analysis -> stored or rejected; stored -> in-analysis (analysed again) or
discarded; rejected -> discarded. A rejection needs a non-conformity code; it cancels the results
of that specimen that are not biologically validated, with the code as their comment, and the
request's status follows its results.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update

from labvault.access import codec
from labvault.access.records import _clinical_fields
from labvault.access.state import UnitState
from labvault.domain.models import (
    CallbackTask,
    Nonconformity,
    OrderedTest,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Sensitivity,
    Specimen,
    SpecimenStatus,
    TimelineEntry,
    Urgency,
    Workflow,
)
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.interop._common import NumberFault, read_number, unit_system
from labvault.store import schema as t
from labvault.store.engine import iter_tenant_rows, waiting_results_query

S = SpecimenStatus
MOVES: dict[SpecimenStatus, frozenset[SpecimenStatus]] = {
    S.COLLECTED: frozenset({S.RECEIVED, S.REJECTED}),
    S.RECEIVED: frozenset({S.IN_ANALYSIS, S.STORED, S.REJECTED}),
    S.IN_ANALYSIS: frozenset({S.STORED, S.REJECTED}),
    S.STORED: frozenset({S.IN_ANALYSIS, S.DISCARDED}),
    S.REJECTED: frozenset({S.DISCARDED}),
    S.DISCARDED: frozenset(),
}
LEVELS = ("technical", "biological")
_MAX_IDS = 500  # results validated in one batch
_GONE = frozenset({ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR})
# The states a result waits at: the partial index ix_result_waiting holds these rows (store.schema.WAITING_SQL).
_WAITING_STATES = (str(Workflow.ORDERED), str(Workflow.ENTERED), str(Workflow.TECHNICAL))


@dataclass(frozen=True, slots=True)
class EnteredRequest:
    """What ``enter_request`` created: the request, its specimens (id = barcode, container, type)
    and its results (id, code), in the order of the tests."""

    request_id: str
    specimens: tuple[tuple[str, str, str], ...]
    results: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class JudgeInput:
    """What judging one result needs, read by the gateway: the result with its value, the patient's
    sex and birth date, the specimen's collection time, the request's pregnancy flag, the patient's
    previous result of the same test (another request, a value, not cancelled) and when it was
    collected, the request's results as they are now, and whether this value corrects a validated one."""

    result: Result
    sex: str | None
    birth_date: date | None
    collected_at: datetime | None
    pregnant: bool
    previous: Result | None
    previous_at: datetime | None
    request_results: tuple[Result, ...]
    correction: bool = False


@dataclass(frozen=True, slots=True)
class CalculatedValue:
    """A calculated test's value for the request (its test as the catalogue orders it), as written
    (with the test's decimals)."""

    test: OrderedTest
    text: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's verdict on one result, stored by ``Work.judge_result`` in one write.

    ``notes``: lines the validation screen reads (delta check, calculation not done, why auto-validation
    held the result), kept in the result's sealed comment after a ``NOTES_MARK`` line.
    ``callback_minutes``: a critical value, whose call-back task is due in that many minutes.
    ``release``: ``"<rule set version>:<rule id>"`` when the lab's auto-validation rules release it."""

    catalogue_version: int
    flag: str | None
    ref_low: float | None
    ref_high: float | None
    ref_text: str | None
    notes: tuple[str, ...] = ()
    callback_minutes: int | None = None
    release: str | None = None
    calculated: tuple[CalculatedValue, ...] = ()
    reflex: tuple[OrderedTest, ...] = ()


Judge = Callable[[JudgeInput], Verdict]


@dataclass(frozen=True, slots=True)
class JudgedResult:
    """What judging a result did: the result as stored, the call-back task opened (a critical
    value), the results computed into the request and those ordered by reflex rules (ids)."""

    result: Result
    callback_task_id: str | None
    calculated: tuple[str, ...]
    reflex: tuple[str, ...]


# The judge's notes follow this line in a result's sealed comment: what comes before it is the
# comment proper (typed by hand or sent by the analyser), what follows is the judge's, replaced at
# each judgement.
NOTES_MARK = "--- contrôles ---"


def split_comment(comment: str | None) -> tuple[str | None, tuple[str, ...]]:
    """A stored comment as (the comment proper, the judge's notes)."""
    if not comment:
        return comment, ()
    head, mark, tail = comment.partition(NOTES_MARK)
    if not mark:
        return comment, ()
    proper = head.rstrip("\n") or None
    return proper, tuple(x for x in tail.strip("\n").split("\n") if x)


def _with_notes(comment: str | None, notes: Sequence[str]) -> str | None:
    proper, _ = split_comment(comment)
    if not notes:
        return proper
    return "\n".join([*([proper] if proper else []), NOTES_MARK, *notes])


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Work(UnitState):
    """The lab's workflow on its records: mixed into ``Unit``."""

    # -- requests ---------------------------------------------------------------------------------

    def enter_request(
        self,
        tenant_id: str,
        patient_id: str,
        tests: Sequence[OrderedTest],
        *,
        prescriber_id: str | None = None,
        urgency: Urgency | str = Urgency.ROUTINE,
        clinical: str | None = None,
        pregnant: bool | None = None,
        collected_at: datetime,
        collector: str | None = None,
    ) -> EnteredRequest:
        """A request entered by hand for a stored patient: one specimen per distinct container (its
        id is the barcode its label carries), one result per test, ordered (no value yet)."""
        self._authorise(tenant_id, "request:enter")
        if not tests:
            raise InvalidInput("a request names at least one test")
        try:
            level = Urgency(urgency)
        except ValueError:
            raise InvalidInput("urgency: one of routine, urgent") from None
        pi = t.patient_identity
        if (
            not isinstance(patient_id, str)
            or self.conn.execute(
                select(pi.c.patient_id).where(self._tf(pi, tenant_id), pi.c.patient_id == patient_id)
            ).first()
            is None
        ):
            raise NotFound("no such patient in this lab")
        if prescriber_id is not None:
            pr = t.prescriber
            if (
                self.conn.execute(
                    select(pr.c.prescriber_id).where(self._tf(pr, tenant_id), pr.c.prescriber_id == prescriber_id)
                ).first()
                is None
            ):
                raise NotFound("no such prescriber in this lab")
        now = utcnow()
        request_id = new_id()
        request = Request(
            request_id=request_id,
            patient_id=patient_id,
            prescriber_id=prescriber_id,
            requested_at=now,
            status=RequestStatus.REGISTERED,
            urgency=level,
            entered_by=self.principal.account_id,
            clinical=clinical,
            pregnant=pregnant,
            collector=collector,
        )
        specimens: dict[str, Specimen] = {}
        results: list[Result] = []
        for test in tests:
            sp = specimens.get(test.container)
            if sp is None:
                sp = specimens[test.container] = Specimen(
                    specimen_id=new_id(),
                    request_id=request_id,
                    type=test.specimen_type,
                    collected_at=collected_at,
                    status=SpecimenStatus.COLLECTED,
                    status_at=now,
                    container=test.container,
                )
            results.append(
                Result(
                    result_id=new_id(),
                    request_id=request_id,
                    code=test.code,
                    label=test.label,
                    code_system=test.code_system,
                    specimen_id=sp.specimen_id,
                    unit=test.unit,
                    unit_system=unit_system(test.unit) if test.unit else None,
                    status=ResultStatus.PENDING,
                    observation_key=f"{test.code_system}|{test.code}|",
                    workflow=Workflow.ORDERED,
                )
            )
        self._add_requests(tenant_id, [request], audit=False)
        self._add_specimens(tenant_id, list(specimens.values()), audit=False)
        self._add_results(tenant_id, results, audit=False)
        self._record(
            tenant_id,
            "request:enter",
            "request",
            1,
            refs=[request_id, *(s.specimen_id for s in specimens.values())],
        )
        return EnteredRequest(
            request_id,
            tuple((s.specimen_id, s.container or "", s.type) for s in specimens.values()),
            tuple((r.result_id, r.code) for r in results),
        )

    # -- specimens --------------------------------------------------------------------------------

    def specimen_event(
        self,
        tenant_id: str,
        specimen_id: str,
        to_status: SpecimenStatus | str,
        *,
        nonconformity: Nonconformity | str | None = None,
    ) -> Specimen:
        """Move a specimen in its life (``MOVES``); a rejection needs a non-conformity and cancels
        the specimen's results not yet biologically validated. Returns the specimen as it is now."""
        self._authorise(tenant_id, "specimen:event")
        try:
            target = SpecimenStatus(to_status)
        except ValueError:
            raise InvalidInput(f"specimen status: one of {', '.join(s.value for s in SpecimenStatus)}") from None
        code: Nonconformity | None = None
        if nonconformity is not None:
            try:
                code = Nonconformity(nonconformity)
            except ValueError:
                raise InvalidInput(f"non-conformity: one of {', '.join(n.value for n in Nonconformity)}") from None
        if target is SpecimenStatus.REJECTED and code is None:
            raise InvalidInput("a rejected specimen needs its non-conformity")
        if target is not SpecimenStatus.REJECTED and code is not None:
            raise InvalidInput("a non-conformity is given only with a rejection")
        row = self._specimen_row(tenant_id, specimen_id)
        current = SpecimenStatus(row.status) if row.status else SpecimenStatus.COLLECTED
        if target not in MOVES[current]:
            self._record(tenant_id, f"specimen:{target.value}", "specimen", 0, outcome="error", refs=[specimen_id])
            raise InvalidInput(f"a {current.value} specimen cannot become {target.value}")
        c = self._crypto(tenant_id)
        now = utcnow()
        values: dict[str, Any] = {"status": str(target), "status_at": now}
        if target is SpecimenStatus.REJECTED:
            values["nonconformity"] = str(code)
        s = t.specimen
        if target is SpecimenStatus.RECEIVED:
            # Every sealed column sealed again under the current key, with the time received.
            sealed = {
                col: None
                if getattr(row, col) is None
                else c.cipher.column("specimen", col).seal(
                    specimen_id, c.cipher.column("specimen", col).open(specimen_id, bytes(getattr(row, col)))
                )
                for col in ("type_enc", "collected_at_enc", "container_enc")
            }
            sealed["received_at_enc"] = c.cipher.column("specimen", "received_at_enc").seal(
                specimen_id, now.isoformat().encode()
            )
            values.update(sealed, key_version=c.cipher.current_version)
        self.conn.execute(
            update(s).where(and_(self._tf(s, tenant_id), s.c.specimen_id == specimen_id)).values(**values)
        )
        cancelled: list[str] = []
        if target is SpecimenStatus.REJECTED:
            cancelled = self._cancel_results_of(tenant_id, specimen_id, f"specimen rejected: {code}")
            self._update_request_status(tenant_id, row.request_id)
        self._record(
            tenant_id,
            f"specimen:{target.value}",
            "specimen",
            1,
            refs=[specimen_id, row.request_id, *cancelled],
        )
        return self._specimen(c, self._specimen_row(tenant_id, specimen_id))

    def _in_grant_of(self, c: Any, tenant_id: str, action: str, pseudonym: str) -> None:
        """F2: under a support grant naming patients, a row of another patient is refused (and the
        refusal recorded), as the patient-level reads refuse it. A canary's row is touched (H1)."""
        grant = self._grant
        if (
            grant is not None
            and grant.patients is not None
            and pseudonym not in {c.index.pseudonym(pid) for pid in grant.patients}
        ):
            self._deny(tenant_id, action, "this patient is outside the grant's scope")
        self._canary_touched(tenant_id, pseudonyms=[pseudonym])

    def _specimen_pseudonym(self, tenant_id: str, row: Any) -> str:
        q = t.request
        found = self.conn.execute(
            select(q.c.pseudonym).where(self._tf(q, tenant_id), q.c.request_id == row.request_id)
        ).first()
        return str(found.pseudonym) if found is not None else ""

    def specimen(self, tenant_id: str, specimen_id: str) -> Specimen:
        """One specimen as it is now (its status, non-conformity, times, container)."""
        self._authorise(tenant_id, "patient:request:read")
        c = self._crypto(tenant_id)
        row = self._specimen_row(tenant_id, specimen_id)
        self._in_grant_of(c, tenant_id, "patient:request:read", self._specimen_pseudonym(tenant_id, row))
        out = self._specimen(c, row)
        self._record(tenant_id, "patient:request:read", "specimen", 1, refs=[specimen_id])
        return out

    def specimen_timeline(self, tenant_id: str, specimen_id: str) -> list[TimelineEntry]:
        """A specimen's life as the lab's audit trail tells it: every event naming it, oldest first
        (entered, received, rejected, results cancelled...), allowed, refused or failed."""
        self._authorise(tenant_id, "patient:request:read")
        row = self._specimen_row(tenant_id, specimen_id)
        self._in_grant_of(
            self._crypto(tenant_id), tenant_id, "patient:request:read", self._specimen_pseudonym(tenant_id, row)
        )
        self._flush_events()
        self._scope(tenant_id)
        ev = t.audit_event
        rows = self.conn.execute(
            select(ev.c.at, ev.c.action, ev.c.actor, ev.c.outcome, ev.c.object_refs)
            .where(ev.c.tenant_id == tenant_id, ev.c.object_refs.like(f'%"{specimen_id}"%'))
            .order_by(ev.c.seq)
        ).all()
        out = [
            TimelineEntry(_utc(r.at), r.action, r.actor, r.outcome)
            for r in rows
            if specimen_id in json.loads(r.object_refs or "[]")
        ]
        self._record(tenant_id, "specimen:timeline", "specimen", len(out), refs=[specimen_id])
        return out

    # -- results ----------------------------------------------------------------------------------

    def enter_result(
        self,
        tenant_id: str,
        result_id: str,
        value: str | float | int,
        unit: str | None = None,
        *,
        comment: str | None = None,
    ) -> Result:
        """A value entered by hand for an ordered (or entered, not yet validated) result: the result
        becomes ``entered`` (preliminary), entered by this unit's principal; the earlier version is
        kept (``result_version``)."""
        self._authorise(tenant_id, "result:enter")
        return self._enter_value(tenant_id, result_id, value, unit, comment=comment, action="result:enter")

    def correct_result(
        self,
        tenant_id: str,
        result_id: str,
        value: str | float | int,
        unit: str | None = None,
        *,
        comment: str | None = None,
    ) -> Result:
        """A new value for a biologically validated (or automatically released) result: the value
        validated is kept as a version, the result is ``entered`` again and goes through technical and
        biological validation again; validated again, its status is ``corrected``."""
        self._authorise(tenant_id, "result:enter")
        return self._enter_value(
            tenant_id, result_id, value, unit, comment=comment, action="result:correct", correcting=True
        )

    def _enter_value(
        self,
        tenant_id: str,
        result_id: str,
        value: str | float | int,
        unit: str | None,
        *,
        comment: str | None,
        action: str,
        ref_text: str | None = None,
        flag: str | None = None,
        message_key: str | None = None,
        correcting: bool = False,
    ) -> Result:
        c = self._crypto(tenant_id)
        row, current = self._result_row(c, tenant_id, result_id)
        if current.status in _GONE:
            self._deny(tenant_id, action, "this result is cancelled")
        if correcting and current.workflow not in (Workflow.BIOLOGICAL, Workflow.AUTO_RELEASED):
            self._deny(tenant_id, action, "only a biologically validated result is corrected")
        if not correcting and current.workflow not in (Workflow.ORDERED, Workflow.ENTERED, None):
            self._deny(tenant_id, action, "this result is already validated: correct it instead")
        if row.specimen_id is not None:
            sp = self._specimen_row(tenant_id, row.specimen_id)
            if sp.status in (SpecimenStatus.REJECTED, SpecimenStatus.DISCARDED):
                self._deny(tenant_id, action, f"this result's specimen is {sp.status}")
        num: float | None = None
        text: str | None = None
        written: str | None = None
        comparator: str | None = None
        if isinstance(value, bool):
            raise InvalidInput("value: a number or a text")
        if isinstance(value, int | float):
            num, written = float(value), repr(value)
        else:
            raw = str(value).strip()
            if not raw:
                raise InvalidInput("value: empty")
            if len(raw) > 2000:
                raise InvalidInput("value: too long")
            try:
                n = read_number(raw)
            except NumberFault:
                raise InvalidInput("value: a number that cannot be stored") from None
            if n is None:
                text = raw
            else:
                num, written, comparator = n.value, n.text, n.comparator
        unit = (unit.strip() or None) if unit is not None else current.unit
        new = dataclasses.replace(
            current,
            value_num=num,
            value_text=text,
            value_repr=written,
            comparator=comparator,
            unit=unit,
            unit_system=unit_system(unit) if unit else None,
            comment=comment if comment is not None else current.comment,
            ref_text=ref_text if ref_text is not None else current.ref_text,
            flag=flag if flag is not None else current.flag,
            status=ResultStatus.PRELIMINARY,
            workflow=Workflow.ENTERED,
            entered_by=self.principal.account_id,
            technical_by=None,
            biological_by=None,
            validated_by=None,
            validated_at=None,
            released_by_rule=None,
            version=row.version + 1,
            message_at=utcnow(),
        )
        self._keep_version(c, tenant_id, row, current, message_key)
        self._rewrite_result(c, tenant_id, new)
        self._update_request_status(tenant_id, row.request_id)
        self._record(tenant_id, action, "result", 1, refs=[result_id])
        return new

    def validate(self, tenant_id: str, result_ids: Sequence[str], level: str) -> list[Result]:
        """Validate results, all or none: ``technical`` (an entered result; a technician or a
        biologist) or ``biological`` (a technically validated result; a biologist who did not enter
        it). A result that may not be validated refuses the whole batch, with its reason, audited."""
        if level not in LEVELS:
            raise InvalidInput("level: technical or biological")
        action = f"result:validate:{level}"
        self._authorise(tenant_id, action)
        ids = list(dict.fromkeys(result_ids))
        if not ids:
            raise InvalidInput("no result to validate")
        if len(ids) > _MAX_IDS:
            raise InvalidInput(f"at most {_MAX_IDS} results in one batch")
        c = self._crypto(tenant_id)
        me = self.principal.account_id
        now = utcnow()
        out: list[Result] = []
        requests: set[str] = set()
        for result_id in ids:
            row, current = self._result_row(c, tenant_id, result_id)
            if current.status in _GONE:
                self._deny(tenant_id, action, "a result of the batch is cancelled")
            if level == "technical":
                if current.workflow is not Workflow.ENTERED:
                    self._deny(tenant_id, action, "a result of the batch has no value entered, or is validated")
                new = dataclasses.replace(current, workflow=Workflow.TECHNICAL, technical_by=me)
            else:
                if current.workflow is not Workflow.TECHNICAL:
                    self._deny(tenant_id, action, "a result of the batch is not technically validated")
                if current.entered_by == me:
                    self._deny(
                        tenant_id, action, "a result is never validated biologically by the person who entered it"
                    )
                new = dataclasses.replace(
                    current,
                    workflow=Workflow.BIOLOGICAL,
                    biological_by=me,
                    validated_by=self.principal.name,
                    validated_at=now,
                    status=ResultStatus.CORRECTED if self._was_final(tenant_id, result_id) else ResultStatus.FINAL,
                )
            self._rewrite_result(c, tenant_id, new)
            requests.add(row.request_id)
            out.append(new)
        for request_id in sorted(requests):
            self._update_request_status(tenant_id, request_id)
        self._record(tenant_id, action, "result", len(out), refs=ids)
        return out

    def waiting_results(self, tenant_id: str, states: Sequence[Workflow], *, limit: int = 500) -> list[Result]:
        """The lab's results standing at one of ``states`` (ordered, entered, technically validated),
        oldest request first, at most ``limit``: the rows of the partial index ``ix_result_waiting``
        only, so a worklist opens what it shows, not the lab's whole history. Authorised and audited
        as a read of the lab's results; a support grant does not cover it (no patient named)."""
        self._authorise(tenant_id, "patient:result:read")
        if self._grant is not None:
            raise AccessDenied("a support grant does not cover the lab's worklists")
        wanted = sorted({str(Workflow(w)) for w in states} & set(_WAITING_STATES))
        if not wanted:
            raise InvalidInput(f"waiting results: states among {', '.join(_WAITING_STATES)}")
        c = self._crypto(tenant_id)
        readable = self._readable_categories(tenant_id)
        # The partial index's own condition, written out (SQLite and PostgreSQL use a partial index
        # only for a query that implies its condition, which bound parameters do not show), and on
        # SQLite named: without statistics its planner would rather walk the lab's primary key.
        query = waiting_results_query(self.conn.dialect.name, tenant_id, sorted(str(s) for s in _GONE))
        out = []
        for row in self.conn.execute(query).all():
            if row.workflow not in wanted:
                continue
            res = self._result(c, row)
            if readable is not None and res.sensitivity is not Sensitivity.OTHER and res.sensitivity not in readable:
                continue
            out.append(res)
            if len(out) >= max(1, min(limit, 5000)):
                break
        self._record(tenant_id, "patient:result:read", "result", len(out), refs=sorted({x.request_id for x in out}))
        return out

    def work_result(self, tenant_id: str, result_id: str) -> Result:
        """One result with its workflow fields (who entered and validated it)."""
        self._authorise(tenant_id, "patient:result:read")
        c = self._crypto(tenant_id)
        row, out = self._result_row(c, tenant_id, result_id)
        self._in_grant_of(c, tenant_id, "patient:result:read", str(row.pseudonym))
        self._record(tenant_id, "patient:result:read", "result", 1, refs=[result_id])
        return out

    # -- judging: the catalogue's verdict stored on the result ----------------------------------------

    def judge_result(self, tenant_id: str, result_id: str, judge: Judge) -> JudgedResult:
        """Judge a result whose value was just entered, with ``judge`` (the lab's catalogue and
        rules: ``labvault.lab.work.catalogue_judge``), and store the verdict in one write: flag,
        reference range, catalogue version, the judge's notes; released by the lab's auto-validation
        rules, the result is biologically validated (``released_by_rule``, audited as
        ``result:autovalidate`` naming the rule). A critical value opens its call-back task; the
        calculated tests are computed into the request (and judged), the reflex tests ordered in it.
        Authorised as entering a result."""
        self._authorise(tenant_id, "result:enter")
        return self._judge(tenant_id, result_id, judge)

    def _judge(self, tenant_id: str, result_id: str, judge: Judge, *, calculate: bool = True) -> JudgedResult:
        c = self._crypto(tenant_id)
        row, current = self._result_row(c, tenant_id, result_id)
        if current.workflow is not Workflow.ENTERED or current.status in _GONE:
            raise InvalidInput("only a result with a value entered, not yet validated, is judged")
        given = self._judge_input(c, tenant_id, row, current)
        verdict = judge(given)
        new = dataclasses.replace(
            current,
            flag=verdict.flag,
            ref_low=verdict.ref_low,
            ref_high=verdict.ref_high,
            ref_text=verdict.ref_text,
            comment=_with_notes(current.comment, verdict.notes),
            catalogue_version=verdict.catalogue_version,
        )
        if verdict.release is not None:
            new = dataclasses.replace(
                new,
                workflow=Workflow.BIOLOGICAL,
                status=ResultStatus.CORRECTED if given.correction else ResultStatus.FINAL,
                released_by_rule=verdict.release,
                validated_by=f"Validation automatique (règle {verdict.release})",
                validated_at=utcnow(),
            )
        self._rewrite_result(c, tenant_id, new)
        self._record(tenant_id, "result:judge", "result", 1, refs=[result_id, f"catalogue:{verdict.catalogue_version}"])
        if verdict.release is not None:
            self._update_request_status(tenant_id, row.request_id)
            self._record(tenant_id, "result:autovalidate", "result", 1, refs=[result_id, f"rule:{verdict.release}"])
        task = None
        if verdict.callback_minutes is not None:
            task = self._open_callback(tenant_id, result_id, verdict.callback_minutes)
        calculated: list[str] = []
        if calculate:
            for value in verdict.calculated:
                done = self._calculated_into(tenant_id, row, given.request_results, value)
                if done is not None:
                    self._judge(tenant_id, done, judge, calculate=False)
                    calculated.append(done)
        reflex = self._order_reflex(c, tenant_id, row, given.request_results, verdict.reflex)
        return JudgedResult(new, task, tuple(calculated), tuple(reflex))

    def _judge_input(self, c: Any, tenant_id: str, row: Any, current: Result) -> JudgeInput:
        q = t.request
        req = self.conn.execute(select(q).where(self._tf(q, tenant_id), q.c.request_id == row.request_id)).one()
        pregnant = bool(_clinical_fields(c, req).get("pregnant"))
        sex, born = self._sex_and_birth(
            c, tenant_id, row.pseudonym, self._patient_of_request(c, req.request_id, req.pseudonym, req.patient_enc)
        )
        collected = self._collected_at(c, tenant_id, row.specimen_id)
        r = t.result
        mine: list[Result] = []
        previous: Result | None = None
        previous_at: datetime | None = None
        key = (current.code_system, current.code)
        for other in self.conn.execute(
            select(r).where(self._tf(r, tenant_id), r.c.pseudonym == row.pseudonym).order_by(r.c.result_id)
        ).all():
            if other.request_id == row.request_id:
                mine.append(current if other.result_id == row.result_id else self._result(c, other))
                continue
            res: Result = self._result(c, other)
            if res.status in _GONE or (res.code_system, res.code) != key or res.value_num is None:
                continue
            at = self._collected_at(c, tenant_id, res.specimen_id) or res.message_at
            if at is None or (collected is not None and at > collected):
                continue
            if previous_at is None or at > previous_at:
                previous, previous_at = res, at
        return JudgeInput(
            result=current,
            sex=sex,
            birth_date=born,
            collected_at=collected,
            pregnant=pregnant,
            previous=previous,
            previous_at=previous_at,
            request_results=tuple(mine),
            correction=self._was_final(tenant_id, row.result_id),
        )

    def _sex_and_birth(self, c: Any, tenant_id: str, pseudonym: str, pid: str | None) -> tuple[str | None, date | None]:
        """The sex and birth date of the patient behind a pseudonym: ``pid`` when the request holds
        it sealed, else found by the lab's identity key (trying identities); nothing else is opened."""
        pi = t.patient_identity
        if pid is None:
            # A streamed scan (a server-side cursor on PostgreSQL), closed as soon as the patient is found.
            with closing(iter_tenant_rows(self.conn, "patient_identity", ("patient_id",), tenant_id)) as ids:
                pid = next((p for (p,) in ids if c.index.pseudonym(p) == pseudonym), None)
        if pid is not None:
            found = self.conn.execute(
                select(pi.c.patient_id, pi.c.sex_enc, pi.c.birth_date_enc).where(
                    self._tf(pi, tenant_id), pi.c.patient_id == pid
                )
            ).one()
            col = c.cipher.column
            sex = col("patient_identity", "sex_enc").open(pid, bytes(found.sex_enc)).decode()
            born = col("patient_identity", "birth_date_enc").open(pid, bytes(found.birth_date_enc)).decode()
            return sex or None, date.fromisoformat(born)
        return None, None

    def _collected_at(self, c: Any, tenant_id: str, specimen_id: str | None) -> datetime | None:
        if specimen_id is None:
            return None
        s = t.specimen
        found = self.conn.execute(
            select(s.c.collected_at_enc).where(self._tf(s, tenant_id), s.c.specimen_id == specimen_id)
        ).first()
        if found is None or found.collected_at_enc is None:
            return None
        raw = c.cipher.column("specimen", "collected_at_enc").open(specimen_id, bytes(found.collected_at_enc))
        return _utc(codec.to_dt(raw.decode()))

    def _was_final(self, tenant_id: str, result_id: str) -> bool:
        """Whether a version of this result was ever final (a value entered now corrects it)."""
        v = t.result_version
        return (
            self.conn.execute(
                select(v.c.version_id).where(
                    self._tf(v, tenant_id),
                    v.c.result_id == result_id,
                    v.c.status.in_((str(ResultStatus.FINAL), str(ResultStatus.CORRECTED))),
                )
            ).first()
            is not None
        )

    @staticmethod
    def _ordered(request_id: str, specimen_id: str | None, test: OrderedTest) -> Result:
        return Result(
            result_id=new_id(),
            request_id=request_id,
            code=test.code,
            label=test.label,
            code_system=test.code_system,
            specimen_id=specimen_id,
            unit=test.unit,
            unit_system=unit_system(test.unit) if test.unit else None,
            status=ResultStatus.PENDING,
            observation_key=f"{test.code_system}|{test.code}|",
            workflow=Workflow.ORDERED,
        )

    def _calculated_into(
        self, tenant_id: str, row: Any, request_results: Sequence[Result], value: CalculatedValue
    ) -> str | None:
        """A calculated value entered into the request: the request's result of that test (added
        when it is not there); None when that result is validated already or says the same."""
        test = value.test
        same = [
            x
            for x in request_results
            if (x.code_system, x.code) == (test.code_system, test.code) and x.status not in _GONE
        ]
        if same:
            target = same[0]
            if target.workflow not in (Workflow.ORDERED, Workflow.ENTERED):
                return None
            result_id = target.result_id
        else:
            added = self._ordered(row.request_id, row.specimen_id, test)
            self._add_results(tenant_id, [added], audit=False)
            result_id = added.result_id
        self._enter_value(tenant_id, result_id, value.text, test.unit, comment=None, action="result:calculate")
        return result_id

    def _order_reflex(
        self, c: Any, tenant_id: str, row: Any, request_results: Sequence[Result], tests: Sequence[OrderedTest]
    ) -> list[str]:
        """The reflex tests not yet in the request, ordered on its specimen of their container (else
        on the specimen of the result that ordered them)."""
        have = {(x.code_system, x.code) for x in request_results if x.status not in _GONE}
        wanted = [x for x in dict.fromkeys(tests) if (x.code_system, x.code) not in have]
        if not wanted:
            return []
        s = t.specimen
        boxes: dict[str, str] = {}
        for sp in self.conn.execute(
            select(s).where(self._tf(s, tenant_id), s.c.request_id == row.request_id).order_by(s.c.specimen_id)
        ).all():
            box = self._specimen(c, sp).container
            if box:
                boxes.setdefault(box, sp.specimen_id)
        added = [self._ordered(row.request_id, boxes.get(x.container, row.specimen_id), x) for x in wanted]
        self._add_results(tenant_id, added, audit=False)
        self._update_request_status(tenant_id, row.request_id)
        ids = [x.result_id for x in added]
        self._record(tenant_id, "result:reflex", "result", len(ids), refs=[row.result_id, *ids])
        return ids

    # -- critical values: call-back tasks -----------------------------------------------------------

    def open_callback(self, tenant_id: str, result_id: str, due_minutes: int) -> str:
        """Open a call-back task for a critical result, due in ``due_minutes``; returns its id."""
        self._authorise(tenant_id, "callback:manage")
        return self._open_callback(tenant_id, result_id, due_minutes)

    def _open_callback(self, tenant_id: str, result_id: str, due_minutes: int) -> str:
        if not isinstance(due_minutes, int) or not 0 < due_minutes <= 7 * 24 * 60:
            raise InvalidInput("due_minutes: between 1 and 10080")
        c = self._crypto(tenant_id)
        row, _ = self._result_row(c, tenant_id, result_id)
        task_id = new_id()
        now = utcnow()
        self._insert(
            t.callback_task,
            ("tenant_id", "task_id", "request_id", "result_id", "opened_at", "due_at", "state", "key_version"),
            [
                (
                    tenant_id,
                    task_id,
                    row.request_id,
                    result_id,
                    now,
                    now + timedelta(minutes=due_minutes),
                    "open",
                    c.cipher.current_version,
                )
            ],
        )
        self._record(tenant_id, "callback:open", "callback", 1, refs=[task_id, result_id])
        return task_id

    def close_callback(self, tenant_id: str, task_id: str, called: str, read_back: bool) -> CallbackTask:
        """Close a call-back task: who was called (sealed) and the read-back confirmed (a call whose
        read-back was not confirmed does not close the task)."""
        self._authorise(tenant_id, "callback:manage")
        if not isinstance(called, str) or not called.strip():
            raise InvalidInput("called: who was called")
        if read_back is not True:
            raise InvalidInput("a call-back task closes only once the read-back is confirmed")
        c = self._crypto(tenant_id)
        cb = t.callback_task
        row = self._task_row(tenant_id, task_id)
        if row.state != "open":
            raise InvalidInput("this call-back task is already closed")
        now = utcnow()
        detail = c.cipher.column("callback_task", "detail_enc").seal(
            task_id, codec.pack((called.strip(), True, now.isoformat()))
        )
        self.conn.execute(
            update(cb)
            .where(and_(self._tf(cb, tenant_id), cb.c.task_id == task_id))
            .values(
                state="done",
                closed_by=self.principal.account_id,
                closed_at=now,
                detail_enc=detail,
                key_version=c.cipher.current_version,
            )
        )
        self._record(tenant_id, "callback:close", "callback", 1, refs=[task_id, row.result_id])
        return self._task(c, self._task_row(tenant_id, task_id), now)

    def callbacks(self, tenant_id: str, *, overdue_only: bool = False) -> list[CallbackTask]:
        """The lab's call-back tasks (open ones first, then by due time); those still open past
        their due time are marked overdue, and audited as such (``callback:overdue``)."""
        self._authorise(tenant_id, "callback:read")
        c = self._crypto(tenant_id)
        cb = t.callback_task
        now = utcnow()
        q = select(cb).where(self._tf(cb, tenant_id))
        if overdue_only:
            q = q.where(cb.c.state == "open", cb.c.due_at < now)
        out = [self._task(c, r, now) for r in self.conn.execute(q.order_by(cb.c.due_at, cb.c.task_id)).all()]
        out.sort(key=lambda x: (x.state != "open", x.due_at))
        self._record(tenant_id, "callback:read", "callback", len(out))
        late = [x.task_id for x in out if x.overdue]
        if late:
            self._record(tenant_id, "callback:overdue", "callback", len(late), outcome="alert", refs=late)
        return out

    # -- the gateway's own ----------------------------------------------------------------------------

    def _row_by_id(self, table: Any, column: str, tenant_id: str, key: str, what: str) -> Any:
        """The lab's row of ``table`` whose ``column`` is ``key``; a malformed or unknown id: NotFound."""
        row = (
            self.conn.execute(select(table).where(self._tf(table, tenant_id), table.c[column] == key)).first()
            if isinstance(key, str) and 0 < len(key) <= 64
            else None
        )
        if row is None:
            raise NotFound(f"no such {what} in this lab")
        return row

    def _specimen_row(self, tenant_id: str, specimen_id: str) -> Any:
        return self._row_by_id(t.specimen, "specimen_id", tenant_id, specimen_id, "specimen")

    def _specimen(self, c: Any, row: Any) -> Specimen:
        col = c.cipher.column
        i = row.specimen_id

        def o(name: str) -> str | None:
            blob = getattr(row, name)
            return None if blob is None else str(col("specimen", name).open(i, bytes(blob)).decode())

        received = o("received_at_enc")
        return Specimen(
            specimen_id=i,
            request_id=row.request_id,
            type=o("type_enc") or "",
            collected_at=codec.to_dt(o("collected_at_enc") or ""),
            received_at=None if received is None else codec.to_dt(received),
            status=None if row.status is None else SpecimenStatus(row.status),
            status_at=None if row.status_at is None else _utc(row.status_at),
            nonconformity=None if row.nonconformity is None else Nonconformity(row.nonconformity),
            container=o("container_enc"),
        )

    def _result_row(self, c: Any, tenant_id: str, result_id: str) -> tuple[Any, Result]:
        row = self._row_by_id(t.result, "result_id", tenant_id, result_id, "result")
        self._canary_touched(tenant_id, pseudonyms=[row.pseudonym])  # opened, whatever follows
        # A feed's service account writes the analyser's value and reads nothing back: the lab's
        # sensitive categories restrict who reads, not which analyser may report.
        readable = None if self.principal.kind == "service" else self._readable_categories(tenant_id)
        res: Result = self._result(c, row)
        if readable is not None and res.sensitivity.value != "other" and res.sensitivity not in readable:
            self._deny(tenant_id, "patient:result:read", "this result is of a category this account may not read")
        return row, res

    def _keep_version(self, c: Any, tenant_id: str, row: Any, current: Result, message_key: str | None) -> None:
        """The result's current value kept as a version before it is replaced."""
        vid = new_id()
        pack = codec.result_packer()
        said_at = current.message_at or utcnow()
        self._insert(
            t.result_version,
            (
                "tenant_id",
                "version_id",
                "result_id",
                "request_id",
                "version",
                "status",
                "key_version",
                "observation_enc",
                "recorded_at",
                "message_key",
            ),
            [
                (
                    tenant_id,
                    vid,
                    row.result_id,
                    row.request_id,
                    row.version,
                    row.status,
                    c.cipher.current_version,
                    c.cipher.column("result_version", "observation_enc").seal(vid, pack(current, None, said_at)),
                    utcnow(),
                    message_key,
                )
            ],
        )

    def _rewrite_result(self, c: Any, tenant_id: str, res: Result) -> None:
        r = t.result
        pack = codec.result_packer()
        self.conn.execute(
            update(r)
            .where(and_(self._tf(r, tenant_id), r.c.result_id == res.result_id))
            .values(
                observation_enc=c.cipher.column("result", "observation_enc").seal(
                    res.result_id, pack(res, None, res.message_at or utcnow())
                ),
                status=str(res.status),
                version=res.version,
                key_version=c.cipher.current_version,
                workflow=None if res.workflow is None else str(res.workflow),
                entered_by=res.entered_by,
                technical_by=res.technical_by,
                biological_by=res.biological_by,
                catalogue_version=res.catalogue_version,
                released_by_rule=res.released_by_rule,
            )
        )

    def _cancel_results_of(self, tenant_id: str, specimen_id: str, reason: str) -> list[str]:
        """Cancel a rejected specimen's results not yet biologically validated (each keeps its
        earlier version); returns their ids."""
        c = self._crypto(tenant_id)
        r = t.result
        done: list[str] = []
        for row in self.conn.execute(
            select(r).where(self._tf(r, tenant_id), r.c.specimen_id == specimen_id).order_by(r.c.result_id)
        ).all():
            current: Result = self._result(c, row)
            if current.status in _GONE or current.workflow in (Workflow.BIOLOGICAL, Workflow.AUTO_RELEASED):
                continue
            self._keep_version(c, tenant_id, row, current, None)
            self._rewrite_result(
                c,
                tenant_id,
                dataclasses.replace(
                    current, status=ResultStatus.CANCELLED, comment=reason, version=row.version + 1, message_at=utcnow()
                ),
            )
            done.append(row.result_id)
        return done

    def _update_request_status(self, tenant_id: str, request_id: str) -> None:
        """The request's status, from its results' current states (FHIR DiagnosticReport.status)."""
        r, q = t.result, t.request
        statuses = [
            ResultStatus(s)
            for (s,) in self.conn.execute(
                select(r.c.status).where(self._tf(r, tenant_id), r.c.request_id == request_id)
            ).all()
        ]
        live = [s for s in statuses if s not in _GONE]
        if not live:
            status = RequestStatus.CANCELLED if statuses else RequestStatus.REGISTERED
        elif all(s in (ResultStatus.FINAL, ResultStatus.CORRECTED) for s in live):
            status = RequestStatus.FINAL
        elif all(s is ResultStatus.PENDING for s in live):
            status = RequestStatus.REGISTERED
        else:
            status = RequestStatus.PARTIAL
        self.conn.execute(
            update(q).where(and_(self._tf(q, tenant_id), q.c.request_id == request_id)).values(status=str(status))
        )

    def _task_row(self, tenant_id: str, task_id: str) -> Any:
        return self._row_by_id(t.callback_task, "task_id", tenant_id, task_id, "call-back task")

    def _task(self, c: Any, row: Any, now: datetime) -> CallbackTask:
        called: str | None = None
        read_back: bool | None = None
        if row.detail_enc is not None:
            called, read_back, _ = codec.unpack(
                c.cipher.column("callback_task", "detail_enc").open(row.task_id, bytes(row.detail_enc))
            )
        due = _utc(row.due_at)
        return CallbackTask(
            task_id=row.task_id,
            request_id=row.request_id,
            result_id=row.result_id,
            opened_at=_utc(row.opened_at),
            due_at=due,
            state=row.state,
            overdue=row.state == "open" and due < now,
            closed_by=row.closed_by,
            closed_at=None if row.closed_at is None else _utc(row.closed_at),
            called=called,
            read_back=read_back,
        )


__all__ = [
    "LEVELS",
    "MOVES",
    "NOTES_MARK",
    "CalculatedValue",
    "EnteredRequest",
    "Judge",
    "JudgeInput",
    "JudgedResult",
    "Verdict",
    "Work",
    "split_comment",
]
