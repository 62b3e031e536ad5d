"""Coverage-guided fuzzing of one reader with atheris (libFuzzer), run as its own process:

    python -m tests.fuzz.atheris_target READER CORPUS_DIR [--inject-bug] -- [libFuzzer flags]

The readers are instrumented for coverage; libFuzzer mutates the near-valid seeds of
``tests.fuzz.harness.seeds`` (written to CORPUS_DIR first). Each input goes through
``harness.check``: the reader's input error is the only refusal accepted, so any other exception
(a bug in the reader) ends the run with a traceback and a non-zero exit status.

``--inject-bug`` makes one reader function raise ``KeyError`` on inputs that reach it (used by the
test that shows the harness fails on a bug).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["labvault.interop"]):
    from labvault.interop import csv_in, fhir, hl7v2, hprim

from tests.fuzz import harness


def _inject_bug(reader: str) -> None:
    """A deliberate bug: a function deep in the reader raises KeyError once an input reaches it."""

    def boom(*args, **kwargs):
        raise KeyError("injected bug")

    if reader == "hl7v2":
        hl7v2._Mapper._code = boom
    elif reader == "hprim":
        hprim._Mapper._result = boom
    elif reader == "fhir":
        fhir._Builder._result = boom
    else:
        csv_in._result = boom


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--") if "--" in args else len(args)
    own, fuzzer = args[:split], args[split + 1 :]
    reader, corpus = own[0], Path(own[1])
    if reader not in harness.READERS:
        raise SystemExit(f"unknown reader {reader!r}")
    if "--inject-bug" in own:
        _inject_bug(reader)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(harness.seeds(reader, real=6)):
        (corpus / f"seed-{i:03d}").write_bytes(seed)

    def one_input(data: bytes) -> None:
        harness.check(reader, data)

    atheris.Setup([sys.argv[0], *fuzzer, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
