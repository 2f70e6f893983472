"""``kafka-completions broker start|stop|status``: the local broker from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from devstack.broker import CACHE_DIR_ENV, DEFAULT_CACHE_DIR, BrokerError, LocalBroker


def add_broker_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``broker start|stop|status`` on a parent parser's subcommands."""
    cache_dir = Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()
    parser = subparsers.add_parser(
        "broker",
        help="run a local single-node Kafka broker for development",
        description="Start, stop or inspect a local Kafka broker (KRaft, one node) run from "
        "Maven Central jars. 'status' exits 1 when no broker is running.",
    )
    parser.add_argument("action", choices=("start", "stop", "status"))
    add = parser.add_argument
    add("--data-dir", type=Path, default=cache_dir / "broker", help="default: %(default)s")
    add("--cache-dir", type=Path, default=cache_dir, help=f"jar cache; env {CACHE_DIR_ENV}")
    add("--port", type=int, default=9092, help="client port, 0 picks a free one")
    add("--controller-port", type=int, default=9093, help="controller port, 0 picks one")
    parser.set_defaults(handler=run_broker_command)


def run_broker_command(args: argparse.Namespace) -> int:
    """Run one ``broker`` action from parsed arguments and return the exit code."""
    broker = LocalBroker(
        Path(args.data_dir),
        Path(args.cache_dir),
        port=int(args.port),
        controller_port=int(args.controller_port),
    )
    try:
        return _ACTIONS[str(args.action)](broker)
    except BrokerError as exc:
        print(f"broker {args.action} failed: {exc}", file=sys.stderr)
        return 1


def _start(broker: LocalBroker) -> int:
    verb = "ready" if broker.status() is None else "already running"
    broker.start()
    running = broker.status()
    if running is None:
        raise BrokerError(f"broker exited right after it started; see {broker.log_file}")
    print(f"broker {verb} at {running.bootstrap} (pid {running.pid}, data in {broker.data_dir})")
    return 0


def _stop(broker: LocalBroker) -> int:
    running = broker.status()
    broker.stop()
    if running is None:
        print(f"broker not running (data in {broker.data_dir})")
    else:
        print(f"broker stopped (pid {running.pid}, data in {broker.data_dir})")
    return 0


def _status(broker: LocalBroker) -> int:
    running = broker.status()
    if running is None:
        print(f"broker not running (data in {broker.data_dir})")
        return 1
    print(f"broker running at {running.bootstrap} (pid {running.pid}, data in {broker.data_dir})")
    return 0


_ACTIONS: dict[str, Callable[[LocalBroker], int]] = {
    "start": _start,
    "stop": _stop,
    "status": _status,
}
