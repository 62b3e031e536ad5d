"""Helpers that start real services for tests and benchmarks (throwaway PostgreSQL, SoftHSM2)."""
