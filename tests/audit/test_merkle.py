from hashlib import sha256

from hypothesis import given, settings
from hypothesis import strategies as st

from labvault.audit import merkle


def reference_root(leaves):
    """RFC 6962 MTH, written recursively from the RFC's definition."""
    n = len(leaves)
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])).digest()


def leaves(n):
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@given(st.integers(min_value=0, max_value=300))
def test_root_matches_the_rfc_definition(n):
    assert merkle.root(leaves(n)) == reference_root(leaves(n))


def test_known_small_tree():
    a, b, c = (merkle.leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert merkle.root([a, b, c]) == merkle.node_hash(merkle.node_hash(a, b), c)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=200), st.data())
def test_consistency_proofs_verify_and_detect_rewrites(n, data):
    m = data.draw(st.integers(min_value=1, max_value=n))
    ls = leaves(n)
    proof = merkle.consistency_proof(ls, m)
    old, new = merkle.root(ls[:m]), merkle.root(ls)
    assert merkle.verify_consistency(m, n, old, new, proof)
    # a rewritten history (one old leaf changed) is not a prefix any more
    i = data.draw(st.integers(min_value=0, max_value=m - 1))
    forged = list(ls)
    forged[i] = merkle.leaf_hash(b"forged")
    assert not merkle.verify_consistency(m, n, old, merkle.root(forged), merkle.consistency_proof(forged, m))
    if proof:
        bad = list(proof)
        bad[0] = bytes(32)
        assert not merkle.verify_consistency(m, n, old, new, bad)


def test_compact_range_state_round_trip():
    cr = merkle.CompactRange()
    for h in leaves(37):
        cr.append(h)
    again = merkle.CompactRange.from_state(cr.state())
    for h in leaves(50)[37:]:
        again.append(h)
    assert again.root() == merkle.root(leaves(50))
