"""The ``kafka-completions`` console command: one entry point, a subcommand per role.

serve                 the HTTP front end
worker --model NAME   a worker serving one or more models
broker start|stop|status   the local single-node Kafka broker (development, tests)
dev                   everything at once on the embedded defaults (what `make run` runs)
models list|prepare   the registry with each model's state; convert local weights once
models add NAME --path P   write a local model's entry into the KC_REGISTRY_PATH file
submit FILE.jsonl     publish a bulk job (see producer/jobs_cli.py for every option)
collect --job ID -o OUT.jsonl   write a job's results (resumes; never duplicates a line)
jobs status ID|list   counts of done, failed, pending and tokens per job
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from schemas.errors import ConfigError, KCError
from schemas.logs import configure_logging
from schemas.registry import ModelSpec, add_local_model, load_registry
from schemas.settings import Settings, load_settings

log = logging.getLogger("kafka_completions")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from producer.app import create_app

    settings = _settings(args)
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

    settings = _settings(args)
    run_worker(args.model, settings, load_registry(settings.registry_path))
    return 0


def _models(args: argparse.Namespace) -> int:
    settings = _settings(args)
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


def _dev(args: argparse.Namespace) -> int:
    from devstack.stack import run_stack

    return run_stack(_settings(args))


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(**({"port": args.port} if getattr(args, "port", None) else {}))
    configure_logging(settings.log_level, settings.log_format)
    return settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from devstack.cli import add_broker_commands

    from producer.jobs_cli import add_job_commands

    parser = argparse.ArgumentParser(
        prog="kafka-completions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP front end (KC_HOST, KC_PORT)")
    serve.add_argument("--port", type=int, help="override KC_PORT")
    serve.set_defaults(handler=_serve)
    worker = sub.add_parser("worker", help="run a worker for one or more models")
    worker.add_argument("--model", action="append", required=True, help="a public model name")
    worker.set_defaults(handler=_worker)
    models = sub.add_parser("models", help="list the registry, prepare or add local weights")
    models.add_argument("action", choices=["list", "prepare", "add"])
    models.add_argument("names", nargs="*", help="models to prepare (default: the embedded one)")
    models.add_argument("--path", help="add: a checkpoint directory or a .gguf file")
    models.add_argument("--registry", help="add: the registry file (default KC_REGISTRY_PATH)")
    chat = models.add_mutually_exclusive_group()
    chat.add_argument("--chat", action="store_true", default=None, help="add: a chat model")
    chat.add_argument("--base", dest="chat", action="store_false", help="add: a base model")
    models.set_defaults(handler=_models)
    dev = sub.add_parser("dev", help="broker, front end and workers on the embedded defaults")
    dev.set_defaults(handler=_dev)
    add_broker_commands(sub)
    add_job_commands(sub, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a KCError ends it with its message and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KCError as exc:
        print(f"kafka-completions: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
