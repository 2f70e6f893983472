"""The service subcommands: ``serve``, ``worker``, ``models list|prepare`` and ``dev``.

Each imports its program only when run, so ``kafka-completions submit`` never loads FastAPI
and ``kafka-completions serve`` never loads torch.
"""

from __future__ import annotations

import argparse
from typing import Any

from schemas.logs import configure_logging
from schemas.registry import load_registry
from schemas.settings import Settings, load_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from producer.frontend.app import create_app

    settings = settings_of(args)
    app = create_app(settings, load_registry(settings.registry_path))
    # Our handler formats uvicorn's records too (log_config=None); the front end logs each
    # request itself with its id and status, so uvicorn's access log would only repeat it.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from worker.service import run_worker

    settings = settings_of(args)
    run_worker(args.model, settings, load_registry(settings.registry_path))
    return 0


def _models(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    registry = load_registry(settings.registry_path)
    if args.action == "prepare":
        from worker.weights import checkpoint_dir

        for name in args.names or ["smollm2-135m-instruct"]:
            print(f"{name}: ready in {checkpoint_dir(registry.get(name), settings.cache_dir)}")
        return 0
    for spec in registry:
        print(
            f"{spec.name:28} {spec.backend:13} {spec.unavailable_reason(settings) or 'configured'}"
        )
    return 0


def _dev(args: argparse.Namespace) -> int:
    from devstack.stack import run_stack

    return run_stack(settings_of(args))


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings of a subcommand (``--port`` overrides KC_PORT), with logging configured."""
    settings = load_settings(**({"port": args.port} if getattr(args, "port", None) else {}))
    configure_logging(settings.log_level, settings.log_format)
    return settings


def add_service_commands(sub: Any) -> None:
    """Register the service subcommands on the main parser's subparsers."""
    serve = sub.add_parser("serve", help="run the HTTP front end (KC_HOST, KC_PORT)")
    serve.add_argument("--port", type=int, help="override KC_PORT")
    serve.set_defaults(handler=_serve)
    worker = sub.add_parser("worker", help="run a worker for one or more models")
    worker.add_argument("--model", action="append", required=True, help="a public model name")
    worker.set_defaults(handler=_worker)
    models = sub.add_parser("models", help="list the registry, or prepare local weights")
    models.add_argument("action", choices=["list", "prepare"])
    models.add_argument("names", nargs="*", help="models to prepare (default: the embedded one)")
    models.set_defaults(handler=_models)
    dev = sub.add_parser("dev", help="broker, front end and workers on the embedded defaults")
    dev.set_defaults(handler=_dev)
