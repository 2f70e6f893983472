"""The HTTP front end: its routes live in ``routes/``."""
