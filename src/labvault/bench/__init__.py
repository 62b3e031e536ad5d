"""The ``labvault bench`` workloads: each prints one JSON object as its last line."""
