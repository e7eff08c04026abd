"""Command line: ``python -m ralif <command> ...``.

Each command lives in its own module under ``ralif.commands`` and exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are discovered so commands can be
added without editing this file.

A command's user-facing failures (bad input, missing weights, a file that cannot be written) end
with one ``ralif <command>: error: ...`` line and exit code 1; Ctrl-C ends with one line and exit
code 130 (128 + SIGINT, as shells report it), after the ``finally`` blocks and context managers the
interrupt passed through have cleaned up.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

import ralif.commands

# Plain text for ``--help`` (argparse prints the description as it is, so no reStructuredText).
DESCRIPTION = ("The ralif command line: python -m ralif COMMAND [options] (or ralif COMMAND ...). "
               "python -m ralif COMMAND --help describes a command.")
EXIT_INTERRUPTED = 130


def _command_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(ralif.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"ralif.commands.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ralif", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # One line whatever the message: an OSError's own text is "[Errno 21] Is a directory: 'x'".
    return " ".join(text.split())


def _quiet_stdout() -> None:
    # The reader of our output went away (`ralif ... | head`): what is still buffered for it would
    # fail again, with a second message, when the interpreter flushes stdout on exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    command = "ralif"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        command = f"ralif {args.command}"
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        # The interrupt has already unwound the command (its cleanup ran); no stack trace for Ctrl-C.
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except (ValueError, OSError, RuntimeError) as exc:
        # User-facing failures (bad input, missing weights, an output path that cannot be written)
        # end with one clear line, not a traceback. OSError covers FileNotFoundError,
        # IsADirectoryError, PermissionError and the other file-system errors.
        print(f"{command}: error: {_error_text(exc)}", file=sys.stderr)
        return 1
