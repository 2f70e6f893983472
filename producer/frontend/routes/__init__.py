"""The front end's routers, one module per family of routes."""
