"""The ``prune2drive`` command: one subcommand per job, each in the module that does it.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; its module
docstring's first line is the help text. Errors this package raises on purpose
(:class:`~prune2drive_ros.errors.Prune2DriveError`) are printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

from ..errors import Prune2DriveError

#: subcommand -> module, or a nested table for commands with their own subcommands.
COMMANDS: dict[str, str | dict[str, str]] = {
    "make-bag": "prune2drive_ros.commands.make_bag",
    "replay": "prune2drive_ros.commands.replay",
    "viz": "prune2drive_ros.commands.viz",
    "demo": "prune2drive_ros.commands.demo",
    "tune": "prune2drive_ros.commands.tune",
    "eval": "prune2drive_ros.commands.evaluate",
    "bench": {
        "tfps": "prune2drive_ros.commands.bench.tfps",
        "decode": "prune2drive_ros.commands.bench.decode",
        "prefill": "prune2drive_ros.commands.bench.prefill",
    },
}


def _add_commands(
    subparsers: argparse._SubParsersAction, table: Mapping[str, str | Mapping[str, str]], dest: str
) -> None:
    for name, target in table.items():
        if isinstance(target, Mapping):
            group = subparsers.add_parser(name, help=f"{name} subcommands")
            _add_commands(
                group.add_subparsers(dest=f"{dest}_{name}", required=True, metavar="JOB"),
                target,
                f"{dest}_{name}",
            )
            continue
        module = importlib.import_module(target)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        parser = subparsers.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(parser)
        parser.set_defaults(_module=module)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (imports every subcommand module)."""
    parser = argparse.ArgumentParser(
        prog="prune2drive",
        description="Driving QA over six cameras with Prune2Drive visual-token pruning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    _add_commands(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), COMMANDS, "cmd"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prune2drive`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module: ModuleType = args._module
    try:
        return int(module.run(args) or 0)
    except Prune2DriveError as exc:
        print(f"prune2drive: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prune2drive: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
