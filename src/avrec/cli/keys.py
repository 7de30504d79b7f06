"""``avrec keys new`` and ``avrec keys hash``: API keys for ``avrec serve``, stored only as hashes.

``new`` makes a random key and prints it once, with the ``[[serve.api_keys]]`` entry (its SHA-256) to
paste into the serve config; ``hash`` does the same for a key you already have (the old plain
``serve.api_key`` / ``AVREC_API_KEY``, read from stdin so it stays out of the shell history).
"""

from __future__ import annotations

import argparse
import sys

from avrec.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="make API keys for `avrec serve` (stored hashed, with scopes)",
                       description="API keys with scopes read, write, admin (admin includes write, write includes "
                       "read). The server keeps only each key's SHA-256 in [[serve.api_keys]].")
    ks = k.add_subparsers(dest="keys_command", metavar="COMMAND")
    for name, text in (("new", "make a random key and print it with its config entry"),
                       ("hash", "print the config entry of an existing key (read from stdin)")):
        p = ks.add_parser(name, help=text)
        p.add_argument("--name", required=True, help="a label for logs and rate limits, e.g. ingest")
        p.add_argument("--scopes", default="read", help="comma-separated: read, write, admin (default read)")
        p.add_argument("--rate", type=float, default=None, help="this key's own requests per second (optional)")
        p.set_defaults(func=cmd_new if name == "new" else cmd_hash)
    k.set_defaults(func=lambda args: (k.print_help(), 2)[1])


def _entry(name: str, key: str, scopes: str, rate: float | None) -> str:
    from avrec.serve.security import hash_key, parse_keys

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    entry: dict = {"name": name, "hash": hash_key(key), "scopes": wanted}
    if rate is not None:
        entry["rate"] = rate
    parse_keys([entry], where="--scopes/--rate: entry")  # the same checks the server makes
    lines = ["[[serve.api_keys]]", f'name = "{name}"', f'hash = "{entry["hash"]}"',
             "scopes = [" + ", ".join(f'"{s}"' for s in wanted) + "]"]
    if rate is not None:
        lines.append(f"rate = {rate:g}")
    return "\n".join(lines)


def cmd_new(args: argparse.Namespace) -> int:
    from avrec.serve.security import new_key

    key = new_key()
    entry = _entry(args.name, key, args.scopes, args.rate)
    print(f"key (shown once; give it to the client as X-API-Key): {key}", file=sys.stderr)
    print(entry)
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip()
    if not key:
        raise ConfigError("stdin: expected the key on the first line (e.g. `printf %s \"$AVREC_API_KEY\" | avrec keys "
                          "hash --name old --scopes admin`)")
    print(_entry(args.name, key, args.scopes, args.rate))
    return 0
