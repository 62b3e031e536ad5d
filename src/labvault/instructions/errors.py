"""The errors of a lab's instructions: a document malformed or unsigned, a signature that does not
verify or a signer the lab does not have, and a well-signed instruction refused here or now (its
``reason`` is the word its audit event records)."""

from __future__ import annotations

from labvault.errors import AccessDenied, InvalidInput, SignatureInvalid


class InstructionInvalid(InvalidInput):
    """The document is malformed or breaks a rule; the message names where and why."""

    reason = "malformed"


class InstructionUnsigned(InvalidInput):
    reason = "unsigned"


class InstructionSignatureInvalid(SignatureInvalid):
    reason = "bad_signature"


class UnknownSigner(SignatureInvalid):
    """The key is not one of the lab's current signers (never registered, or revoked)."""

    reason = "unknown_signer"


class InstructionRefused(AccessDenied):
    """A well-signed instruction that does not apply here or now."""

    reason = "refused"


class WrongTenant(InstructionRefused):
    reason = "wrong_tenant"


class NotYetValid(InstructionRefused):
    reason = "not_yet_valid"


class Expired(InstructionRefused):
    reason = "expired"


class DeadlinePassed(InstructionRefused):
    reason = "deletion_deadline_passed"


class WrongKind(InstructionRefused):
    reason = "wrong_kind"


class MissingFields(InstructionRefused):
    reason = "missing_fields"
