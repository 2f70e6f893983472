"""API key ids: the one form of a key that leaves the front end (on Kafka, in batch records,
in logs and metrics). The front end's key checker and the job CLI compute them alike, so a
batch submitted with the CLI belongs to the key that sees it over HTTP."""

from __future__ import annotations

import hashlib


def key_id(key: str) -> str:
    """A stable, non-reversible identifier of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]
