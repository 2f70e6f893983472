"""Unit tests: no broker, no network."""
