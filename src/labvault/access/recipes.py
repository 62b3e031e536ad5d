"""Key recipes a unit hands to a domain, once the policy table allows the action they serve: a
lab's migration package keys (``labvault.crypto.packages.PackageKeys``) and the platform's
signature on a record. What comes out is opaque (wrapped blobs, signatures, public keys, MAC
checks): no key's bytes, and never the key provider itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labvault.access import policy
from labvault.crypto.packages import PackageKeys

if TYPE_CHECKING:
    from labvault.access.gateway import Unit


def package_keys(u: Unit, tenant_id: str, action: str) -> PackageKeys:
    """The lab's migration package keys, for one of the migration procedure's actions."""
    if action not in policy.MIGRATION_WORK:
        raise ValueError(f"package keys serve the migration procedure, not '{action}'")
    u._authorise(tenant_id, action)
    return PackageKeys(u._gw.keys, tenant_id)
