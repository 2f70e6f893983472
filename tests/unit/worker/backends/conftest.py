"""The fake vendor the vendor-backend tests share: one per module, keyed by the module's KEY."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.vendor_server import VendorServer


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[VendorServer]:
    """One fake vendor for the module, accepting the module's ``KEY``."""
    with VendorServer(request.module.KEY) as fake:
        yield fake


@pytest.fixture
async def fresh_server(server: VendorServer) -> VendorServer:
    """The module's fake vendor with a clean script (and no answer of an earlier test left)."""
    await server.until(lambda s: s.in_flight == 0)  # slow answers a timed-out test left
    server.reset()
    return server
