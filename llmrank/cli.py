"""The ``llmrank`` command: ``llmrank <subcommand> …`` (see ``llmrank --help``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from llmrank import __version__
from llmrank.commands import COMMANDS
from llmrank.errors import LlmrankError


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="llmrank", description="Distil an expensive LLM ranker into a cheap one.")
    parser.add_argument("--version", action="version", version=f"llmrank {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"llmrank.commands.{name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        modules[mod.NAME] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(modules[args.command].run(args) or 0)
    except LlmrankError as e:
        print(f"llmrank {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llmrank {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
