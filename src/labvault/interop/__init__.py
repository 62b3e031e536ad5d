"""Interoperability: pure parsers and mappers of external formats (HL7 v2) into domain objects."""
