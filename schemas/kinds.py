"""Backend kinds (``kinds.toml`` beside this module): each kind's name and credential variables.

The contract's side of a backend: the front end, the registry, the settings and the deploy
files need to know which kinds exist and which variables configure a vendor, without
importing the worker's code. The code of a kind is ``worker/backends/<kind>.py``.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources

from schemas.errors import ConfigError

LOCAL_KINDS = frozenset({"transformers", "echo"})


@dataclass(frozen=True, slots=True)
class BackendKind:
    """One kind of backend; a vendor names the variables of its credentials."""

    name: str
    api_key_env: str | None = None
    base_url_env: str | None = None

    @property
    def is_vendor(self) -> bool:
        """A remote API reached with a key (not a model run by the worker itself)."""
        return self.api_key_env is not None


def _kinds_text() -> str:
    return resources.files("schemas").joinpath("kinds.toml").read_text()


@functools.cache
def backend_kinds() -> dict[str, BackendKind]:
    """Every kind, by name, in file order."""
    table = tomllib.loads(_kinds_text())
    kinds: dict[str, BackendKind] = {}
    for name, opts in table.get("kinds", {}).items():
        unknown = set(opts) - {"api_key_env", "base_url_env"}
        if unknown:
            raise ConfigError(f"schemas/kinds.toml: kind {name} has unknown keys {sorted(unknown)}")
        kinds[name] = BackendKind(name, opts.get("api_key_env"), opts.get("base_url_env"))
    return kinds


def vendor_kinds() -> list[BackendKind]:
    """The kinds that are vendors, in file order."""
    return [kind for kind in backend_kinds().values() if kind.is_vendor]


def key_variables() -> list[str]:
    """The variables that hold a vendor's API key."""
    return [k.api_key_env for k in vendor_kinds() if k.api_key_env]


def url_variables() -> list[str]:
    """The variables that hold a vendor's base URL."""
    return [k.base_url_env for k in vendor_kinds() if k.base_url_env]
