from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from labvault.crypto.blind import BlindIndex, normalise_name


def test_name_normalisation():
    assert normalise_name("Lefèvre-d'Orgeval") == "LEFEVREDORGEVAL"
    assert normalise_name("  émile  ") == "EMILE"


def test_indexes_are_per_tenant_and_per_use():
    """M3, F1: indexes are per tenant and per use."""
    a, b = BlindIndex("lab-a", b"\x07" * 32), BlindIndex("lab-b", b"\x07" * 32)
    nir = "180017500000146"
    assert a.nir(nir) == a.nir("1 80 01 75 000 001 46")
    assert a.nir(nir) != b.nir(nir)
    assert len(a.nir(nir)) == 16
    assert a.name("Dupont", "Marie Claire", date(1980, 1, 2)) == a.name("DUPONT", "marie", date(1980, 1, 2))
    assert a.name("Dupont", "Marie", date(1980, 1, 2)) != a.name("Dupont", "Marie", date(1980, 1, 3))
    assert a.pseudonym("p1") != b.pseudonym("p1")
    assert a.pseudonym("p1") != a.nir("p1").hex()


@given(st.text(min_size=1, max_size=40))
def test_pseudonyms_are_stable_hex(pid):
    idx = BlindIndex("lab", b"\x01" * 32)
    assert idx.pseudonym(pid) == idx.pseudonym(pid)
    assert len(idx.pseudonym(pid)) == 32
