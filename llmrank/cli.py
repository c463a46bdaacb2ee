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


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``llmrank retrieve: error: argument --k: must be ≥ 1, got -5``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def quiet_library_noise() -> None:
    """Silence warnings that say nothing to an llmrank user: bitsandbytes' "pip install kernels" hint,
    transformers' ``past_key_values`` deprecation notes, and the tokenizer's "sequence length is longer than
    the specified maximum" (llmrank truncates documents itself, and counts what it cut)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*pip install kernels.*")
    warnings.filterwarnings("ignore", message=r".*past_key_values.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*Token indices sequence length is longer.*")

    class _Drop(logging.Filter):
        PATTERNS = ("Token indices sequence length is longer", "pip install kernels", "past_key_values")

        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            return not any(p in msg for p in self.PATTERNS)

    # a logger's filters apply to the records logged on it (not to those of its children): name the modules
    for name in ("transformers.tokenization_utils_base", "transformers.utils.generic", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(name).addFilter(_Drop())


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = Parser(prog="llmrank", description="Distil an expensive LLM ranker into a cheap one.")
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
    quiet_library_noise()
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
