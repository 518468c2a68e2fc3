"""Audit ledger: Tamper-evident ledger of every access to personal data."""
