"""The ``keys`` subcommands: managed API keys, straight on Kafka (the keys topic).

keys create [--alias A] [--model M]... [--rpm N] [--tpm N] [--max-budget USD]
            [--budget-duration D] [--duration D] [--metadata JSON] [--key sk-...]
keys list [--alias A] [--all]
keys info KEY_ID
keys update KEY_ID [the options of create but --key] [--clear FIELD]...
keys revoke KEY_ID... | keys revoke --alias A

The same fields and checks as the admin routes (``POST /key/generate`` and the rest, see
docs/tenants.md); whoever reaches Kafka is the administrator here. ``create`` prints the key
on stdout, alone and once (a script reads it there); every other line names a key by its key id
and ``key_name``, never the key. A key id, LiteLLM's token or the key itself names a key.

Exit codes: 0 done; 2 a refusal (an unknown key, a taken alias, a bad value, Kafka unreachable),
with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from producer.tenants.keybook import KeyBook, opened
from schemas.errors import KeyConflict, KeyRefused, ModelError, UnknownKey
from schemas.keys import KeyRecord
from schemas.management import GenerateKeyRequest, KeyFields, KeyObject, UpdateKeyRequest
from schemas.registry import load_registry
from schemas.settings import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]
Body = TypeVar("Body", GenerateKeyRequest, UpdateKeyRequest)
_LAST = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
_FIELDS = ("key_alias", "models", "rpm_limit", "tpm_limit", "max_budget", "budget_duration")
_OPTIONS = (*_FIELDS, "duration", "metadata")


def add_key_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``keys`` on the main parser's subparsers."""
    keys = sub.add_parser("keys", help="managed API keys: create, list, info, update, revoke")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints it once, on stdout")
    _field_options(create)
    create.add_argument("--key", help="a custom key (sk- and 17 characters or more)")
    listed = actions.add_parser("list", help="every key: key id, key_name, alias, models")
    listed.add_argument("--alias", help="only the keys of this alias")
    listed.add_argument("--all", action="store_true", help="revoked keys too")
    info = actions.add_parser("info", help="one key's fields, as GET /key/info shows them")
    info.add_argument("ref", metavar="KEY_ID")
    update = actions.add_parser("update", help="change a key's fields")
    update.add_argument("ref", metavar="KEY_ID")
    _field_options(update)
    update.add_argument(
        "--clear",
        action="append",
        default=[],
        choices=_OPTIONS,
        help="remove a field (no limit, every model, no expiry)",
    )
    revoke = actions.add_parser("revoke", help="revoke keys; they are refused at once")
    revoke.add_argument("refs", nargs="*", metavar="KEY_ID")
    revoke.add_argument("--alias", action="append", default=[], help="every key of this alias")
    keys.set_defaults(handler=lambda a: asyncio.run(_run(a, settings_of(a))), kafka=True)


def _field_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alias", dest="key_alias", help="the key's alias (key_alias)")
    parser.add_argument(
        "--model", dest="models", action="append", help="a model it may call (default: all)"
    )
    parser.add_argument("--rpm", dest="rpm_limit", type=int, help="requests a minute")
    parser.add_argument("--tpm", dest="tpm_limit", type=int, help="tokens a minute")
    parser.add_argument("--max-budget", dest="max_budget", type=float, help="USD")
    parser.add_argument("--budget-duration", help="the budget's period (30d, 1w, 1mo)")
    parser.add_argument("--duration", help="the key expires this long from now (30d)")
    parser.add_argument("--metadata", type=json.loads, help="a JSON object")


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as book:
        if args.action == "create":
            return await _create(args, settings, book)
        if args.action == "list":
            return _list(args, book)
        if args.action == "info":
            print(KeyObject.of(book.find(args.ref)).model_dump_json(indent=2))
            return 0
        if args.action == "update":
            return await _update(args, settings, book)
        return await _revoke(args, book)


async def _create(args: argparse.Namespace, settings: Settings, book: KeyBook) -> int:
    body = _body(GenerateKeyRequest, args, _given(args, (*_OPTIONS, "key")))
    _check(settings, body)
    if body.key is not None and _configured(settings, body.key):
        raise KeyConflict("--key: that key is configured already (KC_API_KEYS or KC_ADMIN_KEYS)")
    key, record = await book.generate(
        body.limits(),
        key_alias=body.key_alias,
        metadata=body.metadata,
        duration=body.duration,
        key=body.key,
    )
    print(key)
    print(f"created {_line(record)}; the key is shown this once", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, book: KeyBook) -> int:
    for record in book.listed(revoked=args.all):
        if args.alias is None or record.key_alias == args.alias:
            print(_line(record))
    return 0


async def _update(args: argparse.Namespace, settings: Settings, book: KeyBook) -> int:
    given = _given(args, _OPTIONS)
    given |= {field: None for field in args.clear}
    body = _body(UpdateKeyRequest, args, given | {"key": args.ref})
    _check(settings, body)
    changes = body.model_dump(exclude_unset=True, exclude={"key"})
    record = await book.update(book.find(args.ref).key_id, changes)
    print(f"updated {_line(record)}")
    return 0


async def _revoke(args: argparse.Namespace, book: KeyBook) -> int:
    chosen = [book.find(ref) for ref in args.refs]
    for alias in args.alias:
        found = book.with_alias(alias)
        if not found:
            raise UnknownKey(f"no managed key with key_alias {alias!r}")
        chosen += found
    if not chosen:
        raise KeyRefused("keys revoke: name the keys (KEY_ID...) or --alias")
    for record in await book.revoke(r.key_id for r in chosen):
        print(f"revoked {_line(record)}")
    return 0


def _given(args: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def _body(model: type[Body], args: argparse.Namespace, fields: dict[str, Any]) -> Body:
    """The request the options make, checked as the admin routes check it."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        # pydantic's messages, not its inputs: an input may be a key.
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise KeyRefused(f"keys {args.action}: {reasons}") from exc


def _check(settings: Settings, body: KeyFields) -> None:
    registry = load_registry(settings.registry_path)
    unknown = []
    for name in body.models or ():
        try:
            registry.get(name)
        except ModelError:
            unknown.append(name)
    if unknown:
        raise KeyRefused(f"--model {', '.join(unknown)}: not in the model registry", "models")


def _configured(settings: Settings, key: str) -> bool:
    configured = (*settings.api_keys, *settings.admin_keys)
    return any(hmac.compare_digest(key.encode(), k.get_secret_value().encode()) for k in configured)


def _line(record: KeyRecord) -> str:
    models = ",".join(record.models) or "every model"
    state = ""
    if record.revoked_at is not None:
        state = f"  revoked {_at(record.revoked_at)}"
    elif record.expires is not None:
        state = f"  expires {_at(record.expires)}"
    alias = record.key_alias or "-"
    created = _at(record.created_at)
    return f"{record.key_id}  {record.key_name}  {alias}  {models}  created {created}{state}"


def _at(epoch_s: float) -> str:
    # "seconds": "s" is no timespec of isoformat.
    return datetime.fromtimestamp(min(epoch_s, _LAST), UTC).isoformat(timespec="seconds")
