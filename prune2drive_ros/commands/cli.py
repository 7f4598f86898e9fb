"""The ``prune2drive`` command: one subcommand per job, each in the module that does it.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; its module
docstring's first line is the help text. Only the chosen subcommand's module is imported (its
parser built): the others' help lines are read from their source, so ``prune2drive --help`` and
``prune2drive make-bag --help`` answer without importing torch. Errors this package raises on
purpose (:class:`~prune2drive_ros.errors.Prune2DriveError`) are printed as one line, exit
status 2.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import logging
import re
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from types import ModuleType

from ..errors import Prune2DriveError

#: subcommand -> module, or a nested table for commands with their own subcommands.
COMMANDS: dict[str, str | dict[str, str]] = {
    "make-bag": "prune2drive_ros.commands.make_bag",
    "replay": "prune2drive_ros.commands.replay",
    "viz": "prune2drive_ros.commands.viz",
    "demo": "prune2drive_ros.commands.demo",
    "train": "prune2drive_ros.commands.train",
    "tune": "prune2drive_ros.commands.tune",
    "eval": "prune2drive_ros.commands.evaluate",
    "convert": "prune2drive_ros.commands.convert",
    "bag-convert": "prune2drive_ros.commands.bag_convert",
    "nuscenes2bag": "prune2drive_ros.commands.nuscenes2bag",
    "drivelm-questions": "prune2drive_ros.commands.drivelm_questions",
    "bench": {
        "tfps": "prune2drive_ros.commands.bench.tfps",
        "decode": "prune2drive_ros.commands.bench.decode",
        "prefill": "prune2drive_ros.commands.bench.prefill",
        "gpu": "prune2drive_ros.commands.bench.gpu",
        "objects": "prune2drive_ros.commands.bench.objects",
        "budget": "prune2drive_ros.commands.bench.budget",
    },
}


def module_docstring(module: str) -> str:
    """The docstring of ``module``, read from its source without running it."""
    spec = importlib.util.find_spec(module)
    source = spec.loader.get_source(module) if spec and spec.loader else None  # type: ignore[attr-defined]
    return (ast.get_docstring(ast.parse(source)) if source else None) or module


#: A Sphinx cross-reference: ``:role:`target``` or ``:role:`~dotted.target``` or
#: ``:role:`title <target>```.
_ROLE = re.compile(r":[a-z]+:`(~?)([^`<]*?)\s*(?:<[^>]*>)?`")
#: Bullet of a list item, kept at the start of its wrapped lines.
_BULLET = re.compile(r"^([*-] )")


def terminal_text(docstring: str) -> str:
    """A module docstring as ``--help`` shows it: Sphinx roles reduced to their names (the last
    part of a ``~`` target), inline-code quotes dropped, each paragraph and list item wrapped
    to the terminal (at most 100 columns) and the blank lines between them kept."""

    def role(match: re.Match[str]) -> str:
        short, target = match.groups()
        return target.rsplit(".", 1)[-1] if short else target

    text = _ROLE.sub(role, docstring).replace("``", "")
    width = min(shutil.get_terminal_size().columns, 100) - 2
    blocks = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        items = re.split(r"\n(?=[*-] )", paragraph)
        wrapped = []
        for item in items:
            bullet = _BULLET.match(item)
            indent = " " * len(bullet.group(1)) if bullet else ""
            wrapped.append(textwrap.fill(" ".join(item.split()), width, subsequent_indent=indent))
        blocks.append("\n".join(wrapped))
    return "\n\n".join(blocks)


def _first_positional(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option: the subcommand chosen at this level (the
    levels above it take flags without values only)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _add_commands(
    subparsers: argparse._SubParsersAction,
    table: Mapping[str, str | Mapping[str, str]],
    dest: str,
    argv: Sequence[str],
) -> None:
    """One subparser per entry of ``table``; only the one ``argv`` chooses gets its flags."""
    chosen = _first_positional(argv)
    rest = list(argv[argv.index(chosen) + 1 :]) if chosen is not None else []
    for name, target in table.items():
        if isinstance(target, Mapping):
            group = subparsers.add_parser(name, help=f"{name} subcommands")
            if name == chosen:
                _add_commands(
                    group.add_subparsers(dest=f"{dest}_{name}", required=True, metavar="JOB"),
                    target,
                    f"{dest}_{name}",
                    rest,
                )
            continue
        if name != chosen:
            summary = module_docstring(target).splitlines()[0]
            subparsers.add_parser(name, help=summary)
            continue
        module = importlib.import_module(target)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        parser = subparsers.add_parser(
            name,
            help=summary,
            description=terminal_text(module.__doc__ or name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        parser.set_defaults(_module=module)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser, with the flags of the subcommand ``argv`` chooses (and its module
    imported); the other subcommands are listed with their help line only."""
    parser = argparse.ArgumentParser(
        prog="prune2drive",
        description="Driving QA over six cameras with Prune2Drive visual-token pruning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    _add_commands(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
        COMMANDS,
        "cmd",
        argv,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prune2drive`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
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
