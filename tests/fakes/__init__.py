"""Local stand-ins for third-party services, for the tests only."""
