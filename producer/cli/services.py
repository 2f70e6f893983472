"""The service subcommands: ``serve``, ``worker`` and ``dev`` (``models``: producer/cli/models.py).

Each imports its program only when run, so ``kafka-completions submit`` never loads FastAPI
and ``kafka-completions serve`` never loads torch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from schemas.clients import check_broker
from schemas.logs import configure_logging
from schemas.registry import load_registry
from schemas.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from producer.frontend.app import create_app
    from schemas.ports import listening_socket

    settings = settings_of(args)
    app = create_app(settings, load_registry(settings.registry_path))
    # Bound here, not by uvicorn, so a port in use is one line naming KC_PORT (uvicorn would
    # log the OSError and exit 1 without naming the setting).
    sock = listening_socket("KC_PORT", settings.host, settings.port)
    # Our handler formats uvicorn's records too (log_config=None) at the level configure_logging
    # gave the client libraries (log_level=None); the front end logs each request itself with
    # its id and status, so uvicorn's access log would only repeat it.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=None,
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        # The gateway starts before uvicorn does (its lifespan then finds it started): a
        # start-up failure is then our one-line error, not uvicorn's traceback around it.
        await app.state.front.start()
        log.info("front end on http://%s:%d", settings.host, sock.getsockname()[1])
        await server.serve(sockets=[sock])

    asyncio.run(serve())
    # As uvicorn.run: a start-up that failed (lifespan error, logged) exits 3.
    return 0 if server.started else 3


def _worker(args: argparse.Namespace) -> int:
    from worker.service import run_worker

    settings = settings_of(args)
    run_worker(args.model, settings, load_registry(settings.registry_path))
    return 0


def _dev(args: argparse.Namespace) -> int:
    from devstack.stack import run_stack

    return run_stack(settings_of(args))


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings of a subcommand (``--port`` overrides KC_PORT), with logging configured.

    A subcommand that talks to Kafka (``kafka=True`` in its defaults) first checks that a
    broker answers, so one that does not is one line naming KC_KAFKA_BOOTSTRAP, exit code 2.
    """
    settings = load_settings(**({"port": args.port} if getattr(args, "port", None) else {}))
    configure_logging(settings.log_level, settings.log_format)
    if getattr(args, "kafka", False):
        asyncio.run(check_broker(settings))
    return settings


def add_service_commands(sub: Any) -> None:
    """Register the service subcommands on the main parser's subparsers."""
    serve = sub.add_parser("serve", help="run the HTTP front end (KC_HOST, KC_PORT)")
    serve.add_argument("--port", type=int, help="override KC_PORT")
    serve.set_defaults(handler=_serve, kafka=True)
    worker = sub.add_parser("worker", help="run a worker for one or more models")
    worker.add_argument("--model", action="append", required=True, help="a public model name")
    worker.set_defaults(handler=_worker, kafka=True)
    dev = sub.add_parser("dev", help="broker, front end and workers on the embedded defaults")
    dev.set_defaults(handler=_dev)
