"""`argen completion bash|zsh`: the script is generated from the parser, so it completes what the CLI takes."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from argen.cli import build_parser, main
from argen.completion import script
from argen.pretrained import list_models

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def complete(words: list[str]) -> list[str]:
    """What the bash script offers for the command line ``words`` (the last one being typed)."""
    words_q = " ".join(f"'{w}'" for w in words)
    prog = (f"{script('bash', build_parser(knobs=True))}\nCOMP_WORDS=({words_q}); COMP_CWORD={len(words) - 1}\n"
            '_argen; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=60, check=True).stdout
    return out.split()


@needs_bash
@pytest.mark.parametrize("words, want", [
    (["argen", "sa"], ["sample"]),
    (["argen", "train", ""], ["tokenizer", "generator", "classifier", "-h", "--help"]),
    (["argen", "sample", "--mo"], ["--model"]),
    (["argen", "train", "generator", "--preset", "var-dig"], ["var-digits"]),
    (["argen", "sample", "--precision", ""], ["fp32", "bf16"]),
    (["argen", "sample", "--sampler", "x", "--win"], ["--window"]),  # a sampler knob, from the registry
    (["argen", "sample", "--out", ""], []),  # a path: left to bash's file names
])
def test_bash_completes_commands_flags_and_choices(words, want):
    assert complete(words) == want


@needs_bash
def test_bash_offers_the_shipped_models():
    assert complete(["argen", "eval", "--model", ""]) == list_models() and list_models()


def test_the_cli_prints_each_script(capsys):
    assert main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    assert bash.rstrip().endswith("complete -o default -F _argen argen")
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef argen\n")
    with pytest.raises(SystemExit) as e:
        main(["completion", "fish"])
    assert e.value.code == 2


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses():
    subprocess.run(["zsh", "-n", "-c", script("zsh", build_parser(knobs=True))], check=True, timeout=60)
