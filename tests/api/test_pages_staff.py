"""The lab staff's pages over HTTP: the identity-vigilance queue (traits side by side, the decision
as the API takes it), the quarantine (refused messages with their reason; replay, drop), and the
enrolment by the one-time link (password, commitment, authenticator with its QR code, then sign-in);
vendor accounts and another lab's staff get nothing of a lab's queue or quarantine."""

from __future__ import annotations

import base64
import re

import pytest

from labvault.access import Purpose
from labvault.accounts import service
from labvault.identity import service as identity
from labvault.ingest import intake
from labvault.web.pages import PAGE_CSP
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.conftest import lab_user, totp_code
from tests.identity.helpers import JONES_NIR, ingest, oru


def _queued(api) -> str:
    """A message whose INS points to an identity with other traits, waiting in lab A's queue."""
    feed = lab_user(api.gateway, LAB_A, "biologist", name="Feed")
    s = ingest(api.gateway, feed, oru("J1", ins=JONES_NIR, family="JONES", given="Mary", born="19610615", sex="F"))
    assert s.accepted == 1, s.reasons
    s = ingest(api.gateway, feed, oru("Q2", ins=JONES_NIR, family="JEAN", given="PIERRE", born="19500101"))
    assert s.queued == 1, (s.accepted, s.reasons)
    with api.gateway.unit(feed, Purpose.CARE) as u:
        return identity.queue(u, LAB_A)[-1].queue_id


def _refused(api) -> str:
    """A message refused (no patient identity: PID-5 empty), kept in lab A's quarantine."""
    feed = lab_user(api.gateway, LAB_A, "biologist", name="Feed")
    s = ingest(api.gateway, feed, oru("R1", ins=None, family="", given="", born="19610615"))
    assert s.rejected == 1 and s.quarantine_ids, (s.accepted, s.reasons)
    return s.quarantine_ids[0]


def test_a_technician_resolves_a_queued_conflict_seeing_both_identities(api):
    """M2, G1: the lab's technician sees the queued message's conflict and, side by side, the
    traits received and the candidate's (names, birth date, sex), then decides "create" with the
    page's CSRF field: a new identity, the message out of the queue; without the field, nothing."""
    qid = _queued(api)
    c = _page_login(api, f"technician@{LAB_A}")
    page = c.get("/identity/queue")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    html = page.text
    assert qid in html and "même INS, autres traits" in html
    for received in ("JEAN", "PIERRE", "01/01/1950"):
        assert received in html
    for candidate in ("JONES", "Mary", "15/06/1961"):
        assert candidate in html
    assert f'action="/identity/queue/{qid}/resolve"' in html

    r = c.post(f"/identity/queue/{qid}/resolve", data={"action": "create"}, follow_redirects=False)
    assert r.status_code == 403
    r = c.post(
        f"/identity/queue/{qid}/resolve",
        data={"action": "create", "csrf": _form_csrf(html)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/identity/queue?done=created"
    after = c.get(r.headers["location"])
    assert "Nouvelle identité créée" in after.text and qid not in after.text
    bio = lab_user(api.gateway, LAB_A, "biologist", name="Feed")
    with api.gateway.unit(bio, Purpose.CARE) as u:
        done = [i for i in identity.queue(u, LAB_A, status=None) if i.queue_id == qid]
        assert done[0].status == "created" and done[0].resolved_to
        assert u.get_patient(LAB_A, done[0].resolved_to).family_name == "JEAN"


def test_a_biologist_attaches_a_queued_message_to_the_patient_named(api):
    """M2: "attach" with a patient id named in the form, as the API's ``patient_id``: the message's
    results go to that identity."""
    qid = _queued(api)
    bio = lab_user(api.gateway, LAB_A, "biologist", name="Feed")
    with api.gateway.unit(bio, Purpose.CARE) as u:
        (jones,) = u.find_patients_by_nir(LAB_A, JONES_NIR)
    c = _page_login(api, f"biologist@{LAB_A}")
    page = c.get("/identity/queue")
    r = c.post(
        f"/identity/queue/{qid}/resolve",
        data={"action": "attach", "patient_id": jones.patient_id, "csrf": _form_csrf(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/identity/queue?done=attached"
    with api.gateway.unit(bio, Purpose.CARE) as u:
        (item,) = [i for i in identity.queue(u, LAB_A, status=None) if i.queue_id == qid]
        assert (item.status, item.resolved_to) == ("attached", jones.patient_id)
        assert len(u.results_of(LAB_A, jones.patient_id)) == 4


def test_the_lab_admin_reads_the_queue_only(api):
    """M2, F1: the lab_admin reads the queue (no decision form); its decision posted anyway is refused."""
    qid = _queued(api)
    c = _page_login(api, f"lab_admin@{LAB_A}")
    page = c.get("/identity/queue")
    assert page.status_code == 200 and qid in page.text and "JEAN" in page.text
    assert "/resolve" not in page.text and "Lecture seule" in page.text
    r = c.post(f"/identity/queue/{qid}/resolve", data={"action": "reject", "csrf": _form_csrf(page.text)})
    assert r.status_code == 403
    assert qid in c.get("/identity/queue").text


def test_the_quarantine_lists_a_refused_message_with_its_reason_and_drops_it(api):
    """G1: a refused message is listed with its reason, format and feed; a biologist drops it (the
    record stays, the content is erased)."""
    qid = _refused(api)
    c = _page_login(api, f"biologist@{LAB_A}")
    page = c.get("/quarantine")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    bio = lab_user(api.gateway, LAB_A, "biologist", name="Feed")
    with api.gateway.unit(bio, Purpose.CARE) as u:
        (item,) = [i for i in intake.listing(u, LAB_A) if i.quarantine_id == qid]
    assert item.reason and item.reason in page.text.replace("&#39;", "'").replace("&quot;", '"')
    assert "hl7v2" in page.text and ">test<" in page.text
    r = c.post(f"/quarantine/{qid}/replay", data={"csrf": _form_csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/quarantine?done=refused"
    r = c.post(f"/quarantine/{qid}/drop", data={"csrf": _form_csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/quarantine?done=dropped"
    assert f"/quarantine/{qid}/" not in c.get("/quarantine").text
    with api.gateway.unit(bio, Purpose.CARE) as u:
        assert [i.status for i in intake.listing(u, LAB_A, status=None) if i.quarantine_id == qid] == ["dropped"]


@pytest.mark.parametrize("key", ["support", "operator", "security_officer"])
def test_vendor_accounts_get_nothing_of_the_queue_or_the_quarantine(api, key):
    """F1, M2: a vendor account signed in gets neither page, no menu entry, no value of the lab."""
    qid, rid = _queued(api), _refused(api)
    c = _page_login_any(api, key)
    for path in ("/identity/queue", "/quarantine"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
        assert qid not in r.text and rid not in r.text and "JEAN" not in r.text and "JONES" not in r.text
        assert f'href="{path}"' not in r.text
    page = c.get("/identity/queue")
    r = c.post(f"/identity/queue/{qid}/resolve", data={"action": "reject", "csrf": _session_csrf(c)})
    assert r.status_code == 403 and "JEAN" not in page.text
    r = c.post(f"/quarantine/{rid}/drop", data={"csrf": _session_csrf(c)})
    assert r.status_code == 403


def test_another_labs_staff_get_nothing(api):
    """F1: lab B's biologist sees lab B's (empty) queue and quarantine, nothing of lab A's, and
    naming lab A's queued or quarantined message finds nothing."""
    qid, rid = _queued(api), _refused(api)
    c = _page_login(api, f"biologist@{LAB_B}")
    for path in ("/identity/queue", "/quarantine"):
        r = c.get(path)
        assert r.status_code == 200
        assert qid not in r.text and rid not in r.text and "JEAN" not in r.text and "JONES" not in r.text
    csrf = _form_csrf(c.get("/quarantine").text)
    r = c.post(f"/identity/queue/{qid}/resolve", data={"action": "reject", "csrf": csrf})
    assert r.status_code == 404 and "JEAN" not in r.text
    r = c.post(f"/quarantine/{rid}/drop", data={"csrf": csrf})
    assert r.status_code == 404
    bio = lab_user(api.gateway, LAB_A, "biologist", name="Feed")
    with api.gateway.unit(bio, Purpose.CARE) as u:
        assert qid in [i.queue_id for i in identity.queue(u, LAB_A)]
        assert rid in [i.quarantine_id for i in intake.listing(u, LAB_A)]


def _page_login_any(api, key: str):
    """Sign in through the pages, whatever page the account lands on."""
    acct = api.accounts[key]
    c = api.client()
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": _form_csrf(page.text), "email": acct.email, "password": acct.password, "next": "/login"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    if acct.mfa:
        page = c.get(r.headers["location"])
        r = c.post("/login/totp", data={"csrf": _form_csrf(page.text), "code": acct.code()}, follow_redirects=False)
        assert r.status_code == 303
    assert "lv_session" in c.cookies
    return c


def _session_csrf(c) -> str:
    return service.csrf_token(c.cookies["lv_session"])


@pytest.mark.parametrize("role", ["lab_admin", "technician"])
def test_enrolment_by_the_link_then_sign_in(api, role):
    """E1, E2: an invited account opens its link: the password policy and the commitment are
    stated; the two passwords must match; for a lab_admin the authenticator's QR code is an image
    (data URI, no inline SVG) with the same secret as the otpauth key shown, whose first code
    completes the enrolment; the account then signs in through the pages."""
    tenant = LAB_A if role != "lab_admin" else LAB_B  # the platform invites lab B's first lab_admin
    creator = api.accounts.creator(tenant, role)  # lab A's lab_admin invites its technician
    email = f"new-{role.replace('_', '-')}@{tenant}.api.invalid"
    with api.gateway.unit(creator, Purpose.ADMINISTRATION) as u:
        invited = service.create_account(u, tenant_id=tenant, name="Nora Vidal", email=email, roles=[role])
    assert invited.enrolment_token

    c = api.client()
    page = c.get("/enrol")  # the link is /enrol#token=...: the browser sends no token in the URL
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    assert 'name="token"' in page.text and 'src="/static/enrol.js"' in page.text
    assert "au moins 12 caractères" in page.text and "Engagement de confidentialité" in page.text
    csrf = _form_csrf(page.text)
    password = "Enrol-pages-pass-01!"
    form = {"csrf": csrf, "token": invited.enrolment_token, "password": password, "commitment": "accepted"}
    r = c.post("/enrol", data={**form, "password2": password + "x"})
    assert r.status_code == 422 and "diffèrent" in r.text
    r = c.post("/enrol", data={**form, "password2": password, "commitment": ""})
    assert r.status_code == 422
    r = c.post("/enrol", data={**form, "password2": password})
    assert r.status_code == 200, r.text
    if role == "lab_admin":
        assert "<svg" not in r.text
        m = re.search(r'<img class="qr" src="data:image/svg\+xml;base64,([^"]+)"', r.text)
        assert m
        svg = base64.b64decode(m.group(1)).decode()
        assert svg.startswith("<svg") and "</svg>" in svg
        key = re.search(r'<code class="secret">([A-Z2-7]+)</code>', r.text)
        assert key
        secret = key.group(1)
        r = c.post(
            "/enrol/confirm", data={"csrf": _form_csrf(r.text), "token": invited.enrolment_token, "code": "000000"}
        )
        assert r.status_code == 401 and "ne correspond pas" in r.text and secret in r.text
        code = totp_code(secret)
        r = c.post("/enrol/confirm", data={"csrf": _form_csrf(r.text), "token": invited.enrolment_token, "code": code})
        assert r.status_code == 200, r.text
    assert "L'activation est terminée." in r.text.replace("&#39;", "'") and 'href="/login"' in r.text
    again = c.post("/enrol", data={**form, "csrf": _form_csrf(c.get("/enrol").text), "password2": password})
    assert again.status_code == 401 and "invalide ou a expiré" in again.text  # the link is spent

    s = api.client()
    page = s.get("/login")
    r = s.post(
        "/login",
        data={"csrf": _form_csrf(page.text), "email": email, "password": password, "next": "/patients"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    if role == "lab_admin":
        assert r.headers["location"].startswith("/login/totp")
        assert "lv_session" not in s.cookies
        page = s.get(r.headers["location"])
        r = s.post(
            "/login/totp",
            data={"csrf": _form_csrf(page.text), "code": totp_code(secret), "next": "/patients"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/patients" and "lv_session" in s.cookies
        assert s.get("/quarantine").status_code == 200
    else:
        assert r.headers["location"] == "/patients" and "lv_session" in s.cookies
        assert s.get("/identity/queue").status_code == 200


def test_the_enrolment_page_takes_no_token_from_its_url(api):
    """E1, E2: ``GET /enrol?token=...`` (the old link form, a secret in a URL: browser history,
    Referer, access logs) shows the same empty form as ``GET /enrol``: the token is not read, not
    echoed, and opens no step of the enrolment; posted with the form it works. Reopened after the
    password, the form leads back to the authenticator step with the same key."""
    creator = api.accounts.creator(LAB_B, "lab_admin")
    with api.gateway.unit(creator, Purpose.ADMINISTRATION) as u:
        invited = service.create_account(
            u, tenant_id=LAB_B, name="Nora Vidal", email="url-token@lab-b.api.invalid", roles=["lab_admin"]
        )
    token = invited.enrolment_token
    assert token
    c = api.client()
    plain, with_token = c.get("/enrol"), c.get("/enrol", params={"token": token})
    assert plain.status_code == with_token.status_code == 200
    assert token not in with_token.text and 'name="token" value=""' in with_token.text
    assert 'class="qr"' not in with_token.text
    password = "Enrol-pages-pass-02!"
    form = {"token": token, "password": password, "password2": password, "commitment": "accepted"}
    r = c.post("/enrol", data={**form, "csrf": _form_csrf(with_token.text)})
    assert r.status_code == 200 and 'class="qr"' in r.text
    key = re.search(r'<code class="secret">([A-Z2-7]+)</code>', r.text)
    assert key
    again = c.post("/enrol", data={**form, "csrf": _form_csrf(c.get("/enrol").text)})
    assert again.status_code == 200 and f'<code class="secret">{key.group(1)}</code>' in again.text
    assert c.get("/enrol", params={"token": token}).text.count('class="qr"') == 0
