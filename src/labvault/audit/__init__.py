"""The tamper-evident audit trail: a hash chain per lab, signed Merkle checkpoints, verification."""
