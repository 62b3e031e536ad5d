"""Deterministic synthetic data shaped like a French medical biology lab's."""

from labvault.synth.generator import LabGenerator, PatientRecord, field_count, results_stream

__all__ = ["LabGenerator", "PatientRecord", "field_count", "results_stream"]
