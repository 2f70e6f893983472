"""The front end's routers, one module per route family; each is thin over the gateway."""
