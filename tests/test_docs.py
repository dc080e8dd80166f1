"""The documentation stays true to the code: the CLI reference is current, links resolve, and the
quickstart names only real commands.

Each check is a function of text, so that the tests below can also show it has power: a broken
link, an unknown command and a stale reference are each caught on purpose.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATOR = DOCS / "make_cli_reference.py"

FENCED = re.compile(r"^(`{3,}|~{3,})([^\n]*)\n.*?^\1[ \t]*$", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)  # [label]: target
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, mailto:, //host
# `argen CMD` where a shell would run it: at the start of a line or inline code span, after a shell
# operator or `$ `, through a path (.venv/bin/argen) or `python -m argen` / `torchrun ... -m argen`
COMMAND = re.compile(r"(?:^|[;&|(]\s*|\$\s+|-m\s+)(?:[\w./-]*/)?argen\s+([a-z][a-z0-9-]*)",
                     re.MULTILINE)
SHELL = {"", "bash", "sh", "shell", "console", "zsh", "text"}


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """``text`` without code: links inside fenced blocks or inline code are examples, not links."""
    return INLINE.sub("", FENCED.sub("", text))


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """The relative link targets of a markdown file that name no existing file or folder (anchors aside)."""
    text = path.read_text() if text is None else text
    prose = _prose(text)
    bad = []
    for target in LINK.findall(prose) + REFERENCE.findall(prose) + HTML.findall(prose):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / file).exists():
            bad.append(target)
    return bad


def commands_named(text: str) -> set[str]:
    """The words that follow ``argen`` where a shell would run it, in shell code blocks and inline code."""
    snippets = [m.group(0).split("\n", 1)[1] for m in FENCED.finditer(text)
                if m.group(2).strip().lower() in SHELL]
    snippets += [s.strip("`") for s in INLINE.findall(FENCED.sub("", text))]
    return {name for s in snippets for name in COMMAND.findall(s)}


def real_commands() -> set[str]:
    import argparse

    from argen.cli import build_parser

    parser = build_parser()
    return {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


def run_generator(*args: str) -> subprocess.CompletedProcess:
    # a fresh process: samplers registered by other tests in this one must not reach the reference
    return subprocess.run([sys.executable, str(GENERATOR), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


# ---- (a) docs/cli.md is what the parser gives now -------------------------------------------------------

def test_cli_reference_is_current():
    r = run_generator("--check")
    assert r.returncode == 0, (f"docs/cli.md is stale: run `python docs/make_cli_reference.py`\n"
                               f"{r.stdout[-3000:]}{r.stderr[-2000:]}")


def test_cli_reference_covers_every_command():
    text = (DOCS / "cli.md").read_text()
    for name in real_commands() | {"train tokenizer", "train generator", "train classifier"}:
        assert f"\n## argen {name}\n" in text, f"docs/cli.md has no section for `argen {name}`"


def test_cli_reference_check_fails_when_stale(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_cli_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = tmp_path / "cli.md"
    stale.write_text((DOCS / "cli.md").read_text().replace("--per-label", "--per-class", 1))
    module.OUT = stale
    assert module.main(["--check"]) == 1
    assert "per-class" in stale.read_text()  # --check never writes


# ---- (b) relative links resolve -------------------------------------------------------------------------

def test_relative_links_point_to_files():
    bad = {str(p.relative_to(ROOT)): broken_links(p) for p in markdown_files()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"links to files that do not exist: {bad}"


def test_link_check_has_power(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("x")
    page.write_text("[ok](there.md#part) [web](https://example.org) [anchor](#top) ![img](missing.svg)\n"
                    "[gone](nowhere.md) <img src=\"absent.png\">\n[ref]: also-gone.md\n"
                    "`[code](not-a-link.md)`\n```bash\n[x](not-checked.md)\n```\n")
    assert sorted(broken_links(page)) == ["absent.png", "also-gone.md", "missing.svg", "nowhere.md"]


# ---- (c) the quickstart names real commands -------------------------------------------------------------

def test_quickstart_names_only_real_commands():
    named = commands_named((DOCS / "quickstart.md").read_text())
    assert {"train", "sample", "eval"} <= named, f"the quickstart should show train, sample and eval: {named}"
    unknown = named - real_commands()
    assert not unknown, f"docs/quickstart.md names commands argen does not have: {sorted(unknown)}"


def test_command_check_has_power():
    text = ("Run `argen sampel --model x`.\n```bash\nargen train tokenizer --preset p\n"
            "torchrun --nproc_per_node 2 -m argen trian generator\nls && .venv/bin/argen evl\n```\n"
            "```python\nfrom argen import Pipeline\n```\nthe argen checkpoint folder\n")
    named = commands_named(text)
    assert named == {"sampel", "train", "trian", "evl"}
    assert named - real_commands() == {"sampel", "trian", "evl"}
