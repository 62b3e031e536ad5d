"""Accounts: individual named people and service accounts, passwords, MFA, sessions, API tokens."""
