"""The ingest service: a lab's messages (files, MLLP frames, HTTP bodies) read by ``labvault.interop``
and stored through the gateway, or kept in the encrypted quarantine with a located reason."""
