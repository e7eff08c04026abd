"""``ralif strategies``: list the query strategies and their options."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ralif.strategies import REGISTRY

NAME = "strategies"
HELP = "list query strategies and their options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def describe() -> list[dict]:
    out = []
    for name, cls in REGISTRY.items():
        opts = {
            f.name: {"default": f.default, "help": cls.option_help.get(f.name, "")}
            for f in dataclasses.fields(cls) if f.init
        }
        out.append({"name": name, "summary": cls.summary, "needs_model": cls.needs_model, "options": opts})
    return out


def run(args: argparse.Namespace) -> int:
    info = describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for s in info:
        print(f"{s['name']:<12} {s['summary']}")
        for key, o in s["options"].items():
            print(f"    {key + '=' + str(o['default']):<22} {o['help']}")
    print('\nOptions are given as name(key=value,...), e.g. "ralif(rule=single,diversity=none)".')
    return 0
