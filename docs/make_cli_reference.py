"""Write docs/cli.md, the CLI reference, from the parser itself (``argen.cli.build_parser``).

    python docs/make_cli_reference.py           # rewrite docs/cli.md
    python docs/make_cli_reference.py --check   # exit 1 if docs/cli.md is stale (tests/test_docs.py runs this)

Every command and sub-command (``train tokenizer|generator|classifier`` included) gets a section
with its description and its ``--help`` text. The output does not depend on the terminal or the
machine: help is formatted at a fixed width without colour, and the one machine-dependent number
in the help (the ``--threads`` limit, 4 x the CPU cores) is written as a formula. The argparse
layout itself comes from the running Python, so regenerate with the project's interpreter.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"
WIDTH = 100  # characters per help line, whatever the terminal

HEADER = """\
# CLI reference

Generated from the parser by `python docs/make_cli_reference.py`; do not edit by hand
(`tests/test_docs.py` fails when this page and the parser disagree). The sampling commands
(`sample`, `edit`, `eval`, `bench`) are shown with every registered sampler's knobs. For what the
commands are for, start at [index.md](index.md).
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of each sub-command of ``parser``, in the order they were added."""
    out, seen = [], set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions if a.help not in (None, argparse.SUPPRESS)}
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias names the same parser again
                    seen.add(id(sub))
                    out.append((name, sub, helps.get(name, "")))
    return out


def _stabilise(parser: argparse.ArgumentParser) -> None:
    """Fixed width, no colour, no machine-dependent numbers, for ``parser`` and every parser below it."""
    from argen import flags

    cls = parser.formatter_class
    parser.formatter_class = functools.partial(cls, width=WIDTH)
    if hasattr(parser, "color"):  # Python >= 3.14 colours help on a terminal
        parser.color = False
    limit = f"1..{flags.MAX_THREADS}"
    for action in parser._actions:
        if isinstance(action.help, str) and action.dest == "threads":
            action.help = action.help.replace(limit, "1..4 x the CPU cores")
    for _, sub, _ in _subcommands(parser):
        _stabilise(sub)


def _walk(parser: argparse.ArgumentParser, help_line: str = ""):
    yield parser, help_line
    for _, sub, line in _subcommands(parser):
        yield from _walk(sub, line)


def _anchor(prog: str) -> str:
    return prog.replace(" ", "-")


def render() -> str:
    """The text of docs/cli.md for the parser as it is now."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # anything that asks the terminal sees the same width
    try:
        from argen.cli import build_parser

        root = build_parser(knobs=True)
        _stabilise(root)
        parsers = list(_walk(root))
        lines = [HEADER, "## Commands", ""]
        for parser, help_line in parsers[1:]:
            depth = parser.prog.count(" ") - 1
            lines.append(f"{'  ' * depth}- [`{parser.prog}`](#{_anchor(parser.prog)})"
                         + (f": {help_line}" if help_line else ""))
        lines.append("")
        for parser, help_line in parsers:
            lines += [f"## {parser.prog}", ""]
            text = parser.description or help_line
            if text:
                lines += [text, ""]
            lines += ["```text", parser.format_help().rstrip(), "```", ""]
        return "\n".join(lines).rstrip() + "\n"
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write docs/cli.md from argen's parser.")
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md differs from what would be written")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        old = OUT.read_text() if OUT.is_file() else ""
        if old == text:
            return 0
        diff = difflib.unified_diff(old.splitlines(), text.splitlines(), "docs/cli.md", "parser now", lineterm="", n=1)
        print("\n".join(list(diff)[:60]))
        print("docs/cli.md is stale: run `python docs/make_cli_reference.py`", file=sys.stderr)
        return 1
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
