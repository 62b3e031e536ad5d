"""A lab's catalogue and rules stored per lab, through the gateway."""

from __future__ import annotations

import pytest

from labvault.access import Principal, Purpose
from labvault.cli import main
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput
from labvault.lab import service
from labvault.lab.catalogue import default_text
from tests.conftest import lab_user, make_lab

RULES = 'version = "av-1"\n[[rule]]\nid = "AV"\ntests = ["*"]\nrequire = ["in_reference_range", "no_critical"]\n'
OWN = default_text().replace('version = "labvault-default-2025.1"', 'version = "lab-a-2025.1"')


@pytest.fixture
def labs(gateway):
    make_lab(gateway, "lab-a")
    make_lab(gateway, "lab-b", finess="690000025")
    return gateway


def test_load_version_and_current(labs) -> None:
    bio = lab_user(labs, "lab-a", "biologist")
    with labs.unit(bio, Purpose.ADMINISTRATION) as u:
        default = service.current_catalogue(u, "lab-a")
        first = service.load_catalogue(u, "lab-a", OWN)
        second = service.load_catalogue(u, "lab-a", OWN.replace("lab-a-2025.1", "lab-a-2025.2"))
        with pytest.raises(InvalidInput, match="already loaded"):
            service.load_catalogue(u, "lab-a", OWN)
        current = service.current_catalogue(u, "lab-a")
    assert (default.number, default.catalogue.version, default.loaded_by) == (0, "labvault-default-2025.1", None)
    assert (first.number, second.number) == (1, 2)
    assert (current.number, current.catalogue.version, current.loaded_by) == (2, "lab-a-2025.2", bio.account_id)
    assert current.catalogue.digest == second.catalogue.digest != first.catalogue.digest


def test_only_a_biologist_activates_rules_and_is_recorded(labs) -> None:
    bio = lab_user(labs, "lab-a", "biologist")
    admin = lab_user(labs, "lab-a", "lab_admin", name="Adm")
    tech = lab_user(labs, "lab-a", "technician", name="Tec")
    with labs.unit(admin, Purpose.ADMINISTRATION) as u:
        stored = service.write_rules(u, "lab-a", RULES)
        assert service.current_rules(u, "lab-a") is None  # written, not in force
    with pytest.raises(AccessDenied), labs.unit(admin, Purpose.ADMINISTRATION) as u:
        service.activate_rules(u, "lab-a", stored.number)
    with pytest.raises(AccessDenied), labs.unit(tech, Purpose.ADMINISTRATION) as u:
        service.write_rules(u, "lab-a", RULES.replace("av-1", "av-2"))
    with labs.unit(bio, Purpose.ADMINISTRATION) as u:
        service.activate_rules(u, "lab-a", stored.number)
    with labs.unit(tech, Purpose.ADMINISTRATION) as u:
        current = service.current_rules(u, "lab-a")
    assert current is not None
    assert (current.number, current.rules.version, current.written_by) == (1, "av-1", admin.account_id)
    assert current.activated_by == bio.account_id


@pytest.mark.parametrize("role", ["support", "operator", "platform_admin", "security_officer"])
def test_a_vendor_account_gets_nothing_of_a_labs_catalogue_or_rules(labs, role) -> None:
    """F2: the vendor never acts on a lab's data without the lab."""
    vendor = Principal(f"vendor-{role}", "Vendor", PLATFORM, frozenset({role}))
    for call in (
        lambda u: service.current_catalogue(u, "lab-a"),
        lambda u: service.load_catalogue(u, "lab-a", OWN),
        lambda u: service.write_rules(u, "lab-a", RULES),
        lambda u: service.activate_rules(u, "lab-a", 1),
        lambda u: service.current_rules(u, "lab-a"),
    ):
        with pytest.raises(AccessDenied), labs.unit(vendor, Purpose.ADMINISTRATION) as u:
            call(u)


def test_another_labs_catalogue_is_never_read(labs) -> None:
    """F1: a lab's account reads its own lab's catalogue only."""
    bio_a = lab_user(labs, "lab-a", "biologist")
    bio_b = lab_user(labs, "lab-b", "biologist", name="Other")
    with labs.unit(bio_a, Purpose.ADMINISTRATION) as u:
        service.load_catalogue(u, "lab-a", OWN)
    with pytest.raises(AccessDenied), labs.unit(bio_b, Purpose.ADMINISTRATION) as u:
        service.current_catalogue(u, "lab-a")
    with labs.unit(bio_b, Purpose.ADMINISTRATION) as u:
        own = service.current_catalogue(u, "lab-b")
    assert (own.number, own.catalogue.version) == (0, "labvault-default-2025.1")


def test_cli_check_exit_codes(tmp_path, capsys) -> None:
    good, bad, rules = tmp_path / "c.toml", tmp_path / "bad.toml", tmp_path / "r.toml"
    good.write_text(OWN, "utf-8")
    bad.write_text(OWN.replace('unit = "mmol/L"', 'unit = "mmol/l/x"', 1), "utf-8")
    rules.write_text(RULES, "utf-8")
    assert main(["catalogue", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert '"catalogue": "lab-a-2025.1"' in out and '"tests": 74' in out
    assert main(["catalogue", "check", str(bad)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["labvault: error: catalogue: test NA: field unit: not a valid UCUM unit"]
    assert main(["catalogue", "check", str(rules)]) == 0
    assert '"rules": "av-1"' in capsys.readouterr().out
    assert main(["catalogue", "check", str(tmp_path / "none.toml")]) != 0
