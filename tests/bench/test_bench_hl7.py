"""`labvault bench hl7` runs end to end and ends with its JSON (figures are measured, not asserted)."""

import json

from typer.testing import CliRunner

from labvault.bench.hl7 import build_messages
from labvault.cli.app import app
from labvault.domain.identifiers import OID_NIR
from labvault.interop.hl7v2 import parse, to_domain


def test_bench_hl7_prints_its_json_last():
    out = CliRunner().invoke(app, ["bench", "hl7", "--messages", "200"])
    assert out.exit_code == 0, out.output[-1500:]
    figures = json.loads(out.output.strip().splitlines()[-1])
    for key in (
        "messages",
        "obx_per_message_avg",
        "messages_per_s",
        "baseline_per_s",
        "ratio",
        "seconds",
        "python",
        "cpu",
    ):
        assert key in figures
    assert figures["messages"] == 200
    assert 10 <= figures["obx_per_message_avg"] <= 25
    assert figures["messages_per_s"] > 0 and figures["baseline_per_s"] > 0 and figures["ratio"] > 0


def test_bench_messages_are_deterministic_valid_oru_with_an_ins():
    from stdnum.fr import nir

    a, obx = build_messages(30, seed=3)
    assert (a, obx) == build_messages(30, seed=3) and a != build_messages(30, seed=4)[0]
    for raw in a:
        msg = parse(raw)
        assert msg.message_type == "ORU^R01" and msg.version == "2.5"
        m = to_domain(msg)
        assert m.identity.ins_oid == OID_NIR and nir.is_valid(m.identity.nir)
        assert 10 <= len(m.results) <= 25
    assert obx == sum(len(to_domain(parse(raw)).results) for raw in a)
