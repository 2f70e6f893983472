"""The ``models`` subcommands: the registry with each model's state, and local weights.

models list           every model: configured or why not; where a local model's weights stand
models prepare [NAME] convert a local model's GGUF once into the cache
models add NAME --path P [--chat|--base]   write a local model's entry into the registry file
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from producer.cli.services import settings_of
from schemas.errors import ConfigError
from schemas.registry import ModelSpec, add_local_model, load_registry
from schemas.settings import Settings


def _models(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.action == "add":  # the registry file may not exist yet
        return _add_model(args, settings)
    registry = load_registry(settings.registry_path)
    if args.action == "prepare":
        from worker.weights import checkpoint_dir

        for name in args.names or ["smollm2-135m-instruct"]:
            print(f"{name}: ready in {checkpoint_dir(registry.get(name), settings.cache_dir)}")
        return 0
    for spec in registry:
        print(f"{spec.name:28} {spec.backend:13} {_state(spec, settings)}")
    return 0


def _state(spec: ModelSpec, settings: Settings) -> str:
    reason = spec.unavailable_reason(settings)
    if reason or spec.backend != "transformers":
        return reason or "configured"
    from worker.weights import weights_state

    return weights_state(spec, settings.cache_dir)


def _add_model(args: argparse.Namespace, settings: Settings) -> int:
    file = args.registry or settings.registry_path
    if file is None:
        raise ConfigError("models add writes a registry file: set KC_REGISTRY_PATH or --registry")
    if len(args.names) != 1 or args.path is None:
        raise ConfigError("usage: kafka-completions models add NAME --path P [--base|--chat]")
    spec = add_local_model(Path(file), args.names[0], Path(args.path).expanduser(), args.chat)
    print(f"{spec.name}: {spec.path} in {file} ({_state(spec, settings)})")
    return 0


def add_model_commands(sub: Any) -> None:
    """Register ``models`` on the main parser's subparsers."""
    models = sub.add_parser("models", help="list the registry, prepare or add local weights")
    models.add_argument("action", choices=["list", "prepare", "add"])
    models.add_argument("names", nargs="*", help="models to prepare (default: the embedded one)")
    models.add_argument("--path", help="add: a checkpoint directory or a .gguf file")
    models.add_argument("--registry", help="add: the registry file (default KC_REGISTRY_PATH)")
    chat = models.add_mutually_exclusive_group()
    chat.add_argument("--chat", action="store_true", default=None, help="add: a chat model")
    chat.add_argument("--base", dest="chat", action="store_false", help="add: a base model")
    models.set_defaults(handler=_models)
