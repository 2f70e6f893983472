"""The methods each path of the front end declares, and whether a route reads a request body.

Starlette's router answers an undeclared method with the ``Allow`` of the first route whose path
matches; where GET and POST of one path are separate routes (``/v1/files``, ``/v1/batches``)
that names only one of them. The 405 handler (``errors.py``) takes Allow from this table, and
the body guard asks it whether the route of a POST reads a body at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route
from starlette.types import Scope


@dataclass(frozen=True)
class Resolved:
    """What the table says of one request: its path's methods, and the route of its method."""

    allowed: frozenset[str]  # empty: no route has this path (the router answers 404)
    route: Route | None  # None: the path exists but not with this method

    @property
    def takes_body(self) -> bool:
        """Whether the route reads the request body (a bodiless POST such as a cancel does not)."""
        if isinstance(self.route, APIRoute):
            return self.route.body_field is not None
        return self.route is not None  # a plain route may read anything


class Paths:
    """Every route of the app, looked up by the request's path and method."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes = [route for route in routes if isinstance(route, Route)]

    def resolve(self, scope: Scope) -> Resolved:
        """The methods declared on this request's path and the route that takes its method."""
        # The path regex alone, not ``Route.matches``: this runs on every request, and the
        # front end is never mounted under a root path.
        path, method = scope["path"], scope["method"]
        allowed: set[str] = set()
        chosen: Route | None = None
        for route in self._routes:
            if route.path_regex.match(path) is None:
                continue
            methods = route.methods
            if methods is None or method in methods:
                chosen = chosen or route
            allowed |= methods or set()
        return Resolved(frozenset(allowed), chosen)
