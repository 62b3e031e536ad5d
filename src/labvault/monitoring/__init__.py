"""Watching the platform: rules over the audit stream, alerts that escalate, canaries, explained
accesses and reports from outside. Everything it stores and sends is references, never a personal value."""
