"""The access gateway: every read and write of personal data passes here."""

from labvault.access.gateway import Gateway, Unit
from labvault.access.principal import Principal, Purpose

__all__ = ["Gateway", "Principal", "Purpose", "Unit"]
