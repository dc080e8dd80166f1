"""The installed package: a wheel built from this tree, installed away from it, holds and samples every
shipped model (package data is easy to lose: the models live two folders deeper than the classifiers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from argen.pretrained import list_models

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``argen`` built as a wheel and installed into a folder of its own (no dependencies: the venv has them)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "argen", src / "argen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), "."],
                   cwd=src, check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("argen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in list_models():
        for part in ("", "tokenizer/"):
            for f in ("config.json", "model.safetensors", "README.md"):
                assert f"argen/assets/models/{name}/{part}{f}" in names
    assert any(n.startswith("argen/assets/classifier-") for n in names)
    assert "argen/web/index.html" in names  # the page of argen serve
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)],
                   check=True, capture_output=True)
    return tmp


def run(installed: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed / "site"), "OMP_NUM_THREADS": "1"}
    work = installed / "work"  # outside the repository, so `import argen` cannot find the source tree
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, check=False)


def test_the_wheel_holds_and_samples_every_shipped_model(installed):
    models = list_models()
    assert len(models) >= 5
    r = run(installed, "-m", "argen", "info", "--models")
    assert r.returncode == 0, r.stderr
    assert all(name in r.stdout for name in models)
    # one process samples them all (one torch import instead of five)
    script = ("import sys, argen, argen.cli\n"
              "from argen.pipeline import Pipeline\n"
              "print(argen.__file__)\n"
              "for name in sys.argv[1:]:\n"
              "    text = Pipeline.from_pretrained(name).text_conditioned\n"
              "    condition = ['--prompt', 'a red circle'] if text else ['--labels', '0']\n"
              "    assert argen.cli.main(['sample', '--model', name, *condition, '--per-label', '1', '--out', name,\n"
              "                           '--device', 'cpu', '--threads', '1', '--quiet']) == 0, name\n")
    r = run(installed, "-c", script, *models)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Path(r.stdout.splitlines()[0]).is_relative_to(installed / "site")
    for name in models:
        assert (installed / "work" / f"{name}.png").is_file()
