"""``labvault identity`` as a lab's technician uses it: a file with a conflicting identity is ingested
(exit 0, one message queued), the queue listed, the message resolved, the identity shown, validated,
merged and unmerged."""

from __future__ import annotations

import json

from tests.cli.test_cli import home, run  # noqa: F401  (home is a fixture)
from tests.cli.test_ingest_cli import lab  # noqa: F401  (the lab, its technician and two files)
from tests.identity.helpers import DUPONT_NIR, oru


def test_a_technician_resolves_the_queue_from_the_cli(lab, capsys, tmp_path):
    """M2, G1: exit 0 and ``queued`` for the conflicting message; resolved by ``identity resolve``."""
    tech, _, _ = lab
    data = tmp_path / "two.hl7"
    data.write_bytes(
        oru("C1", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704")
        + oru("C2", ins=DUPONT_NIR, family="JEAN", given="PIERRE", born="19500101", value="9.9")
    )
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(data), "--as", tech, "--json")
    assert code == 0, err
    s = json.loads(out.strip())
    assert (s["accepted"], s["queued"], s["rejected"]) == (1, 1, 0)

    code, out, err = run(capsys, "identity", "queue", "--tenant", "bio-lyon", "--as", tech, "--json")
    assert code == 0, err
    (item,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert item["reason"] == "ins-traits" and item["status"] == "held"
    dupont = item["candidate"]

    code, out, err = run(
        capsys, "identity", "resolve", item["id"], "--action", "create", "--tenant", "bio-lyon", "--as", tech
    )
    assert code == 0 and "created" in out and "2 results stored" in out, (out, err)
    created = out.split(" to ")[1].split(":")[0]

    code, out, err = run(capsys, "identity", "show", dupont, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "provisional" in out and DUPONT_NIR in out, err
    code, out, err = run(
        capsys, "identity", "status", dupont, "--to", "validated", "--evidence", "id-card", "--tenant", "bio-lyon",
        "--as", tech,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "identity", "show", dupont, "--tenant", "bio-lyon", "--as", tech)
    assert "validated" in out and "id-card" in out
    code, out, err = run(
        capsys, "identity", "status", created, "--to", "qualified", "--evidence", "insi", "--tenant", "bio-lyon",
        "--as", tech,
    )  # fmt: skip
    assert code == 1 and "needs an INS" in err

    code, out, err = run(capsys, "identity", "merge", dupont, created, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "1 request(s) moved" in out, err
    code, out, err = run(capsys, "identity", "unmerge", created, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "1 request(s) moved back" in out, err
