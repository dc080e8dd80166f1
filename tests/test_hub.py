"""The Hugging Face Hub, offline: ``hf://ORG/NAME`` loads from a Hugging Face cache laid out by hand in
tmp_path (with HF_HUB_OFFLINE=1 nothing may touch the network), and ``argen push`` uploads through a
monkeypatched ``HfApi`` (the test sees which files would go up)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import argen
from argen.cli import main
from argen.errors import ArgenError
from argen.hub import local_dir
from argen.pipeline import Pipeline
from argen.pretrained import model_path

try:
    import huggingface_hub
    import huggingface_hub.constants
except ImportError:
    huggingface_hub = None
needs_hub = pytest.mark.skipif(huggingface_hub is None, reason="huggingface_hub is not installed (pip install "
                                                               "'argen[hub]'; the dev extra has it)")

MODEL = "digits-var"  # the smallest shipped model: samples 3 images in well under a second
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache holding ``org/name`` at ``COMMIT`` (a copy of a shipped model), offline.

    huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so its constants are
    patched too, not only the environment (which a subprocess started by a test would read)."""
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--org--name"
    shutil.copytree(model_path(MODEL), repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if huggingface_hub is not None:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@needs_hub
def test_a_hub_model_samples_the_images_of_the_local_folder(hf_cache, one_thread):
    local = Pipeline.from_pretrained(model_path(MODEL))
    for path in ("hf://org/name", f"hf://org/name@{COMMIT}", "hf://org/name@main"):
        hub = Pipeline.from_pretrained(path)
        assert torch.equal(hub(labels=[0, 1, 2], seed=0), local(labels=[0, 1, 2], seed=0)), path
    assert local_dir("hf://org/name") == hf_cache / "models--org--name" / "snapshots" / COMMIT
    assert type(argen.load("hf://org/name")).__name__ == "VAR"


@needs_hub
def test_the_cli_reads_hub_checkpoints(hf_cache, tmp_path, capsys):
    assert main(["info", "hf://org/name"]) == 0
    assert "VAR (preset var-digits)" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", "hf://org/name", "--labels", "0", "--out", str(tmp_path / "s"), *CPU]) == 0
    assert (tmp_path / "s.png").is_file()


def _argen(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "argen", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@needs_hub
def test_an_uncached_repo_offline_is_one_line_and_exit_2(hf_cache, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
    for args in (["sample", "--checkpoint", "hf://org/missing", "--out", str(tmp_path / "s"), *CPU],
                 ["info", "hf://org/missing"]):
        r = _argen(*args, env=env)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert ("hf://org/missing: not in the local Hugging Face cache and the Hub cannot be reached"
                in lines[0]), lines[0]
    assert not (tmp_path / "s.png").exists()


@needs_hub
def test_a_malformed_hub_path_is_refused(hf_cache):
    for bad in ("hf://name-only", "hf://a/b/c", "hf://org/name@"):
        with pytest.raises(ArgenError, match="hf://ORG/NAME"):
            local_dir(bad)


def test_without_huggingface_hub_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub -> ImportError
    with pytest.raises(ArgenError, match=r"pip install 'argen\[hub\]'"):
        Pipeline.from_pretrained("hf://org/name")
    assert local_dir("plain/folder") == Path("plain/folder")  # local paths never import it


# ---- push --------------------------------------------------------------------------------------------

@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A generator folder as training leaves it: the checkpoint and the run's own files beside it."""
    d = tmp_path / "run"
    shutil.copytree(model_path(MODEL), d)
    (d / "README.md").unlink()  # push writes the card when the folder has none
    for name in ("train_state.safetensors", "log.jsonl", "metrics.json", ".lock", "notes.txt"):
        (d / name).write_text("x")
    return d


@pytest.fixture
def uploads(monkeypatch) -> list[dict]:
    """HfApi's remote calls, recorded instead of made."""
    calls: list[dict] = []

    def record(name):
        def call(self, *args, **kw):
            calls.append({"call": name, "args": args, **kw})
            # upload_folder returns a CommitInfo; push reads only its commit_url
            return SimpleNamespace(commit_url="https://huggingface.co/org/name/commit/abc")
        return call

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, record(name))
    return calls


def _uploaded(call: dict) -> set[str]:
    """The files ``upload_folder`` would send: its folder filtered by its own allow/ignore patterns."""
    from huggingface_hub.utils import filter_repo_objects

    root = Path(call["folder_path"])
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return set(filter_repo_objects(files, allow_patterns=call.get("allow_patterns"),
                                   ignore_patterns=call.get("ignore_patterns")))


@needs_hub
def test_push_uploads_the_checkpoint_and_its_cards_only(run_folder, uploads, capsys):
    assert main(["push", "--checkpoint", str(run_folder), "--repo", "org/name", "--private"]) == 0
    (create,) = [c for c in uploads if c["call"] == "create_repo"]
    assert create["args"] == ("org/name",) and create["private"] is True
    (upload,) = [c for c in uploads if c["call"] == "upload_folder"]
    assert upload["repo_id"] == "org/name" and upload["revision"] is None
    assert _uploaded(upload) == {"config.json", "model.safetensors", "README.md", "tokenizer/config.json",
                                 "tokenizer/model.safetensors", "tokenizer/README.md"}
    card = (run_folder / "README.md").read_text()
    assert 'Pipeline.from_pretrained("hf://org/name")' in card and "--checkpoint hf://org/name" in card
    out = capsys.readouterr().out
    assert "https://huggingface.co/org/name/commit/abc" in out and "hf://org/name" in out


@needs_hub
def test_push_to_a_branch_creates_it_and_keeps_a_hand_written_card(run_folder, uploads):
    (run_folder / "README.md").write_text("# my own words\n")
    assert main(["push", "--checkpoint", str(run_folder), "--repo", "org/name", "--revision", "v1"]) == 0
    (branch,) = [c for c in uploads if c["call"] == "create_branch"]
    assert branch["branch"] == "v1"
    assert [c["revision"] for c in uploads if c["call"] == "upload_folder"] == ["v1"]
    assert (run_folder / "README.md").read_text() == "# my own words\n"


@needs_hub
def test_push_refuses_what_is_not_a_checkpoint_before_any_upload(tmp_path, run_folder, uploads, capsys):
    assert main(["push", "--checkpoint", str(tmp_path / "nothing"), "--repo", "org/name"]) == 2
    assert main(["push", "--checkpoint", str(run_folder), "--repo", "not a repo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "checkpoint not found" in err[0] and "ORG/NAME" in err[1]
    assert uploads == []
