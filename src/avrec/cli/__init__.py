"""The ``avrec`` command line. Each subcommand group lives in its own module with a ``register`` function.

Exit codes: 0 ok; 2 bad input (one clear line naming the file, row or field); 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

#: Modules that add subcommands; each defines ``register(subparsers)``.
COMMAND_MODULES = [
    "avrec.cli.fit",
    "avrec.cli.evaluate",
    "avrec.cli.data",
    "avrec.cli.serve",
    "avrec.cli.kg",
    "avrec.cli.finetune",
    "avrec.cli.report",
    "avrec.cli.rerank",
    "avrec.cli.logs",
    "avrec.cli.ope",
    "avrec.cli.embed",
    "avrec.cli.versions",
    "avrec.cli.keys",
]


def build_parser() -> argparse.ArgumentParser:
    from avrec import __version__

    parser = argparse.ArgumentParser(prog="avrec", description="Language-model recommendations for audio and video.")
    parser.add_argument("--version", action="version", version=f"avrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from avrec.errors import AvrecError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except AvrecError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if args.debug:
            raise
        print(f"error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
