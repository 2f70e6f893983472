"""The HTTP front end (FastAPI): ``app`` builds it, ``gateway`` runs each request, ``routes``."""
