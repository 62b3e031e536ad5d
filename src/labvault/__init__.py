"""Labvault: medical biology lab data kept encrypted per lab, reached through one access gateway."""

__version__ = "0.1.0"
