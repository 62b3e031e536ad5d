"""Plain domain objects (no database, no keys) and the sensitivity code sets."""

from labvault.domain.models import (
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    Result,
    ResultStatus,
    Sensitivity,
    Specimen,
    Tenant,
)
from labvault.domain.sensitivity import sensitivity_of

__all__ = [
    "Identity",
    "IdentityStatus",
    "Prescriber",
    "Request",
    "Result",
    "ResultStatus",
    "Sensitivity",
    "Specimen",
    "Tenant",
    "sensitivity_of",
]
