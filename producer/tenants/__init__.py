"""Tenants: managed API keys, the usage ledger, and the limits each key cannot exceed."""
