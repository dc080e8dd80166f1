"""End-to-end tests of the ``argen`` command: train, sample, info, --help and bad input.

A tiny tokenizer and VAR are trained once per module (in-process, a few seconds).
Bad input is checked in real subprocesses (run a few at a time): exit code 2, exactly
one line on stderr, no traceback, and the message names the problem.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import Case, run_cases
from PIL import Image

from argen.cli import main

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]
STEPS = 20


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    tok, gen = root / "tok", root / "gen"
    assert main(["train", "tokenizer", "--preset", "msvq-digits", "--steps", str(STEPS), "--batch-size", "32",
                 "--out", str(tok), *TINY_TOK, *CPU]) == 0
    assert main(["train", "generator", "--preset", "var-digits", "--tokenizer", str(tok), "--steps", str(STEPS),
                 "--batch-size", "32", "--out", str(gen), *TINY_GEN, *CPU]) == 0
    return {"root": root, "tok": tok, "gen": gen}


def _sample(gen: Path, out: Path, *extra: str) -> None:
    assert main(["sample", "--checkpoint", str(gen), *extra, "--out", str(out), *CPU]) == 0


# ---- train ---------------------------------------------------------------------------------------------

def test_train_writes_checkpoint_folders(trained):
    for d in (trained["tok"], trained["gen"]):
        for name in ("config.json", "model.safetensors", "train_state.safetensors", "metrics.json"):
            assert (d / name).is_file(), f"{d / name} missing"
    assert (trained["gen"] / "tokenizer" / "config.json").is_file()
    assert (trained["gen"] / "tokenizer" / "model.safetensors").is_file()
    cfg = json.loads((trained["gen"] / "config.json").read_text())
    assert cfg["class"] == "VAR" and cfg["preset"] == "var-digits"
    # the generator's token shapes come from the tiny tokenizer, not from the preset
    assert cfg["config"]["vocab_size"] == 16 and cfg["config"]["token_dim"] == 4
    assert cfg["config"]["depth"] == 1 and cfg["config"]["width"] == 32
    assert cfg["meta"]["step"] == STEPS
    metrics = json.loads((trained["gen"] / "metrics.json").read_text())
    assert np.isfinite(metrics["train_loss"])


def test_train_records_the_command_it_ran(trained):
    # main(argv) must record argv, not the host process's sys.argv (here: pytest's).
    cmd = json.loads((trained["gen"] / "config.json").read_text())["meta"]["command"]
    assert "train generator" in cmd and f"--steps {STEPS}" in cmd, cmd


def test_checkpoint_files_respect_umask(trained):
    """Checkpoints are meant to be shared: files get the usual 0o666 & ~umask mode, not mkstemp's 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    for d in (trained["tok"], trained["gen"], trained["gen"] / "tokenizer"):
        for f in sorted(d.iterdir()):
            if f.is_file():
                assert f.stat().st_mode & 0o777 == want, f"{f}: mode {oct(f.stat().st_mode & 0o777)}, want {oct(want)}"


# ---- sample --------------------------------------------------------------------------------------------

def test_sample_writes_png_and_npz(trained, tmp_path):
    _sample(trained["gen"], tmp_path / "x.png", "--labels", "0,1,2", "--per-label", "2", "--seed", "3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "x.png"]  # no temporary files left
    with np.load(tmp_path / "x.npz") as z:
        images, labels = z["images"], z["labels"]
    assert images.dtype == np.uint8 and images.shape == (6, 8, 8, 1)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert images.std() > 0  # not a blank canvas
    with Image.open(tmp_path / "x.png") as im:
        im.load()
        assert im.format == "PNG" and im.mode == "L"
        w, h = im.size
    assert h > w  # a grid of 3 rows (one per label) by 2 columns


def test_sample_same_seed_same_images_other_seed_different(trained, tmp_path):
    args = ("--labels", "0,1,2", "--per-label", "2")
    _sample(trained["gen"], tmp_path / "a.png", *args, "--seed", "3")
    _sample(trained["gen"], tmp_path / "b.png", *args, "--seed", "3")
    _sample(trained["gen"], tmp_path / "c.png", *args, "--seed", "4")
    a, b, c = (np.load(tmp_path / f"{n}.npz") for n in "abc")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert not np.array_equal(a["images"], c["images"])


@pytest.mark.parametrize("out", ["y.npz", "y"])
def test_sample_out_suffix_variants_write_both_files(trained, tmp_path, out):
    _sample(trained["gen"], tmp_path / out, "--labels", "1", "--per-label", "1")
    assert (tmp_path / "y.npz").is_file() and (tmp_path / "y.png").is_file()
    with np.load(tmp_path / "y.npz") as z:
        assert z["images"].shape == (1, 8, 8, 1) and z["labels"].tolist() == [1]


def test_sample_default_labels_are_all_classes(trained, tmp_path):
    _sample(trained["gen"], tmp_path / "all", "--per-label", "1")
    with np.load(tmp_path / "all.npz") as z:
        assert z["labels"].tolist() == list(range(10))
        assert z["images"].shape == (10, 8, 8, 1)


# ---- info ----------------------------------------------------------------------------------------------

def test_info_text(trained, capsys):
    assert main(["info", str(trained["gen"])]) == 0
    out = capsys.readouterr().out
    assert "VAR" in out and "var-digits" in out and f"trained {STEPS} steps" in out


def test_info_json(trained, capsys):
    from argen.models import load_model

    assert main(["info", str(trained["gen"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["class"] == "VAR" and info["step"] == STEPS and info["preset"] == "var-digits"
    assert info["parameters"] > 0
    assert info["parameters"] == sum(p.numel() for p in load_model(trained["gen"]).parameters())
    assert info["tokenizer"] is True
    assert info["config"]["width"] == 32


def test_info_tokenizer_json(trained, capsys):
    assert main(["info", str(trained["tok"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["class"] == "MultiScaleVQ" and info["step"] == STEPS and info["parameters"] > 0
    assert info["tokenizer"] is None


def test_info_presets(capsys):
    assert main(["info", "--presets"]) == 0
    out = capsys.readouterr().out
    for name in ("msvq-digits", "var-digits", "vq-digits"):
        assert name in out
    assert main(["info", "--presets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["var-digits"]["kind"] == "generator" and rows["msvq-digits"]["kind"] == "tokenizer"
    assert rows["vq-digits"]["data"] == "digits"


def test_a_closed_pipe_ends_quietly():
    """`argen info --presets | head -1`: the reader leaves early; argen ends with 0 and says nothing."""
    p = subprocess.Popen([sys.executable, "-m", "argen", "info", "--presets"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before argen writes (it is still importing), so its first write meets a closed pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0 and err == ""


def test_tensorboard_logs_the_rows_of_log_jsonl(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from argen.checkpoint import read_log

    base = ["train", "tokenizer", "--preset", "vq-digits", "--steps", "3", "--batch-size", "4", "--quiet",
            "--device", "cpu", "--threads", "1", "--train-set", "log_every=1"]
    assert main([*base, "--out", str(tmp_path / "t"), "--tensorboard"]) == 0
    events = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    rows = read_log(tmp_path / "t" / "log.jsonl")
    assert [e.step for e in loss] == [r["step"] for r in rows] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    # without the package: one line before anything is written
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it now raises ImportError
    assert main([*base, "--out", str(tmp_path / "u"), "--tensorboard"]) == 2
    assert "pip install 'argen[tensorboard]'" in capsys.readouterr().err and not (tmp_path / "u").exists()


def test_tf32_flag_switches_tf32_on(tmp_path):
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32  # backend switches, not plain attributes: restored by hand
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        args = ["sample", "--model", "digits-var", "--labels", "0", "--per-label", "1", "--out", str(tmp_path / "s"),
                "--quiet", "--device", "cpu", "--threads", "1"]
        assert main(args) == 0
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
        assert main([*args, "--tf32"]) == 0
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_train_set_reaches_the_training_config(tmp_path, capsys):
    from dataclasses import fields

    from argen.cli import TRAIN_FIELDS
    from argen.training.trainer import TrainConfig

    assert set(TRAIN_FIELDS) == {f.name for f in fields(TrainConfig)}
    base = ["train", "tokenizer", "--preset", "vq-digits", "--steps", "1", "--batch-size", "4", "--quiet",
            "--device", "cpu", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "t"), "--train-set", "weight_decay=0.5",
                 "--train-set", "beta2=0.9"]) == 0
    from argen.checkpoint import read_config

    train = read_config(tmp_path / "t")["meta"]["train_config"]
    assert train["weight_decay"] == 0.5 and train["beta2"] == 0.9
    assert main([*base, "--out", str(tmp_path / "u"), "--train-set", "betas=1"]) == 2
    assert "--train-set betas: not a training field; one of: steps," in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "u"), "--train-set", "steps=3"]) == 2
    assert "--steps is given too" in capsys.readouterr().err
    assert not (tmp_path / "u").exists()


def test_init_starts_a_run_from_a_checkpoints_weights(trained, tmp_path, capsys):
    """--init: another run's weights, a new optimizer and schedule. At a learning rate too small to move a
    float32 weight the run ends on exactly those weights; without --init it does not. A checkpoint of
    another config, --init beside --resume and an unknown name are one-line errors that write nothing."""
    from argen.checkpoint import load_tensors, read_config

    base = ["train", "generator", "--preset", "var-digits", "--tokenizer", str(trained["tok"]), "--steps", "2",
            "--batch-size", "8", "--lr", "1e-12", "--ema", "0", *TINY_GEN, *CPU]
    want = load_tensors(trained["gen"] / "model.safetensors")
    for name, init in (("a", ["--init", str(trained["gen"])]), ("b", [])):
        assert main([*base, "--out", str(tmp_path / name), *init]) == 0
    a, b = (load_tensors(tmp_path / name / "model.safetensors") for name in "ab")
    assert a.keys() == want.keys() and all(torch.equal(a[k], want[k]) for k in want)
    assert not all(torch.equal(b[k], want[k]) for k in want)
    assert read_config(tmp_path / "a")["meta"]["init"] == str(trained["gen"])
    assert "Started from the weights of `gen` (`--init`)" in (tmp_path / "a" / "README.md").read_text()
    for extra, message in ((["--set", "depth=2"], "config differs in depth"),
                           (["--resume"], "--init starts a new run from a checkpoint's weights; --resume"),
                           (["--set", "width=48", "--init", "no-such-model"], "--init no-such-model: not a checkpoint")):
        assert main([*base, "--out", str(tmp_path / "c"), "--init", str(trained["gen"]), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists()


# ---- --help --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["demo"], ["train"], ["train", "tokenizer"], ["train", "generator"],
                                  ["sample"], ["info"]], ids=lambda a: " ".join(["argen", *a]))
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: argen")


def test_help_lists_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "generator", "--help"])
    assert "var-digits" in capsys.readouterr().out


def test_console_script_help_in_a_real_process():
    r = subprocess.run([sys.executable, "-m", "argen", "--help"], check=False, capture_output=True, text=True, env=_env(),
                       timeout=120)
    assert r.returncode == 0 and "sample" in r.stdout and r.stderr == ""


# ---- bad input ----------------------------------------------------------------------------------------
#
# Every case runs in its own process, forked from a driver that imports argen once (tests/hostile.py,
# the harness of the hostile-input table). A few cases also run as a plain `python -m argen` to cover
# what happens before and during the imports.

# id -> (argv, words the one-line message must contain: case-insensitive regexes)
def _bad_cases(t: dict[str, Path]) -> dict[str, tuple[list[str], list[str]]]:
    gen, tok, bad = str(t["gen"]), str(t["tok"]), t["bad"]
    out = str(t["root"] / "unused-out")
    train_tok = ["train", "tokenizer", "--preset", "msvq-digits", "--steps", "1"]
    train_gen = ["train", "generator", "--preset", "var-digits", "--steps", "1", *TINY_GEN]
    cases = {
        "unknown-preset": (["train", "tokenizer", "--preset", "nope", "--out", out, *CPU], ["preset", "nope"]),
        "generator-preset-as-tokenizer": (["train", "tokenizer", "--preset", "var-digits", "--out", out, *CPU],
                                          ["preset", "var-digits"]),
        "sample-missing-dir": (["sample", "--checkpoint", str(bad / "nowhere"), "--out", out, *CPU],
                               ["not found", "nowhere"]),
        "info-missing-dir": (["info", str(bad / "nowhere")], ["not found", "nowhere"]),
        "sample-no-config": (["sample", "--checkpoint", str(bad / "empty"), "--out", out, *CPU], ["config.json"]),
        "info-no-config": (["info", str(bad / "empty")], ["config.json"]),
        "label-out-of-range": (["sample", "--checkpoint", gen, "--labels", "0,99", "--out", out, *CPU],
                               ["--labels", "99"]),
        "labels-not-integers": (["sample", "--checkpoint", gen, "--labels", "0,x", "--out", out, *CPU],
                                ["--labels", "integer"]),
        "sample-corrupt-config": (["sample", "--checkpoint", str(bad / "badcfg"), "--out", out, *CPU],
                                  ["corrupt", "config.json"]),
        "info-corrupt-config": (["info", str(bad / "badcfg")], ["corrupt", "config.json"]),
        "sample-truncated-weights": (["sample", "--checkpoint", str(bad / "trunc"), "--out", out, *CPU],
                                     ["corrupt", "model.safetensors"]),
        "info-truncated-weights": (["info", str(bad / "trunc")], ["corrupt", "model.safetensors"]),
        "steps-zero": ([*train_tok[:-1], "0", "--out", out, *CPU], ["--steps", ">= 1"]),
        "resume-without-state": ([*train_tok, "--resume", "--out", str(bad / "fresh"), *CPU],
                                 ["--resume", "train_state"]),
        "unknown-device": ([*train_tok, "--out", out, "--threads", "1", "--quiet", "--device", "tpu"],
                           ["--device", "tpu"]),
        "sample-unknown-device": (["sample", "--checkpoint", gen, "--out", out, "--threads", "1", "--quiet",
                                   "--device", "tpu"], ["--device", "tpu"]),
        "fashion-mnist-missing-path": ([*train_tok, "--data", "fashion-mnist", "--data-path", str(bad / "no-fmnist"),
                                        "--out", out, *CPU], ["fashion-mnist", "no-fmnist"]),
        "tokenizer-as-sample-checkpoint": (["sample", "--checkpoint", tok, "--out", out, *CPU],
                                           ["tokenizer", "generator"]),
        "unknown-set-field": ([*train_tok, "--set", "nope=1", "--out", out, *CPU], ["nope"]),
        "top-p-zero": (["sample", "--checkpoint", gen, "--top-p", "0", "--out", out, *CPU], ["top[-_]p"]),
        # found while writing these tests
        "set-value-wrong-type": ([*train_tok, "--set", "ch=abc", "--out", out, *CPU], [r"\bch\b"]),
        "set-value-out-of-range": ([*train_tok, "--set", "ch=0", "--out", out, *CPU], [r"\bch\b"]),
        "generator-checkpoint-as-tokenizer": ([*train_gen, "--tokenizer", gen, "--out", out, *CPU], ["tokenizer"]),
        "single-scale-tokenizer-for-var": ([*train_gen, "--tokenizer", str(bad / "vq"), "--out", out, *CPU],
                                           ["tokenizer"]),
        "train-out-is-a-file": ([*train_tok, *TINY_TOK, "--out", str(bad / "afile"), *CPU], ["afile"]),
        "sample-out-under-a-file": (["sample", "--checkpoint", gen, "--labels", "0", "--per-label", "1",
                                     "--out", str(bad / "afile" / "x"), *CPU], ["afile"]),
    }
    if not torch.cuda.is_available():
        cases["cuda-unavailable"] = ([*train_tok, "--out", out, "--threads", "1", "--quiet", "--device", "cuda"],
                                     ["cuda"])
    return cases


BAD_IDS = ["unknown-preset", "generator-preset-as-tokenizer", "sample-missing-dir", "info-missing-dir",
           "sample-no-config", "info-no-config", "label-out-of-range", "labels-not-integers",
           "sample-corrupt-config", "info-corrupt-config", "sample-truncated-weights", "info-truncated-weights",
           "steps-zero", "resume-without-state", "unknown-device", "sample-unknown-device",
           "fashion-mnist-missing-path", "tokenizer-as-sample-checkpoint", "unknown-set-field", "top-p-zero",
           "cuda-unavailable", "set-value-wrong-type", "set-value-out-of-range",
           "generator-checkpoint-as-tokenizer", "single-scale-tokenizer-for-var", "train-out-is-a-file",
           "sample-out-under-a-file"]
PLAIN_PROCESS_IDS = ["unknown-preset", "sample-missing-dir", "sample-truncated-weights"]


def _make_bad_folders(root: Path, gen: Path) -> Path:
    import shutil

    from argen.checkpoint import save_model
    from argen.tokenizers.vq import VQConfig, VQTokenizer

    bad = root / "bad"
    (bad / "empty").mkdir(parents=True)
    (bad / "fresh").mkdir()
    (bad / "afile").write_text("not a folder")
    shutil.copytree(gen, bad / "badcfg")
    (bad / "badcfg" / "config.json").write_text("{garbage\x00 not json")
    shutil.copytree(gen, bad / "trunc")
    w = bad / "trunc" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    vq = VQConfig(image_channels=1, image_size=8, ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, groups=4,
                  codebook_size=16, code_dim=4)
    save_model(bad / "vq", VQTokenizer(vq), preset="vq-digits")
    return bad


@pytest.fixture(scope="module")
def bad_setup(trained):
    if not (trained["root"] / "bad").exists():
        _make_bad_folders(trained["root"], trained["gen"])
    t = dict(trained, bad=trained["root"] / "bad")
    cases = _bad_cases(t)
    assert set(cases) <= set(BAD_IDS), f"cases missing from BAD_IDS: {sorted(set(cases) - set(BAD_IDS))}"
    return t, cases


@pytest.fixture(scope="module")
def bad_results(bad_setup) -> dict[str, tuple[int, str, list[str]]]:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    t, cases = bad_setup
    ran = run_cases([Case(k, argv) for k, (argv, _) in cases.items()], {}, t["root"] / "stderr")
    return {k: (*ran[k], cases[k][1]) for k in cases}


@pytest.fixture(scope="module")
def plain_results(bad_setup) -> dict[str, tuple[int, str, list[str]]]:
    t, cases = bad_setup

    def run(argv):
        return subprocess.run([sys.executable, "-m", "argen", *argv], check=False, capture_output=True, text=True, env=_env(),
                              cwd=t["root"], timeout=300)

    with ThreadPoolExecutor(max_workers=len(PLAIN_PROCESS_IDS)) as pool:
        futures = {k: pool.submit(run, cases[k][0]) for k in PLAIN_PROCESS_IDS}
        return {k: (f.result().returncode, f.result().stderr, cases[k][1]) for k, f in futures.items()}


def _check_one_line_exit_2(case: str, rc: int, err: str, words: list[str]) -> None:
    assert "Traceback" not in err, f"{case}: traceback on stderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"{case}: stderr is not exactly one line:\n{err}"
    assert rc == 2, f"{case}: exit code {rc}, stderr: {err}"
    for w in words:
        assert re.search(w, lines[0], re.IGNORECASE), f"{case}: {w!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line_exit_2(bad_results, case):
    if case not in bad_results:
        pytest.skip("CUDA is available here")
    _check_one_line_exit_2(case, *bad_results[case])


@pytest.mark.parametrize("case", PLAIN_PROCESS_IDS)
def test_bad_input_plain_python_m_argen(plain_results, case):
    _check_one_line_exit_2(case, *plain_results[case])


def test_bad_input_writes_nothing(bad_results, trained):
    # failed commands leave nothing behind: no output folder, no samples, no half checkpoint
    root = trained["root"]
    assert not (root / "unused-out").exists()
    assert not list(root.glob("unused-out*"))
    assert sorted(p.name for p in (root / "bad" / "fresh").iterdir()) == []
    assert (root / "bad" / "afile").read_text() == "not a folder"


def test_threads_default_to_omp_num_threads(monkeypatch):
    from argen.cli import _setup, build_parser

    args = build_parser().parse_args(["sample", "--checkpoint", "x", "--out", "y", "--quiet", "--device", "cpu"])
    before = torch.get_num_threads()
    try:
        for omp, want in (("2", 2), ("1", 1), ("junk", max(1, os.cpu_count() or 1))):
            monkeypatch.setenv("OMP_NUM_THREADS", omp)
            _setup(args)
            assert torch.get_num_threads() == min(want, 4 * (os.cpu_count() or 1))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("argv, words", [
    (["sample", "--seed", str(2**63)], "--seed"), (["sample", "--threads", "0"], "--threads"),
    (["sample", "--temperature", "-inf"], "--temperature"), (["sample", "--top-p", "nan"], "--top-p"),
    (["edit", "--n", "100001"], "--n"), (["eval", "--n", "5"], "--n"), (["sample", "--out", "."], "--out"),
])
def test_numbers_and_paths_are_checked_by_the_parser(argv, words, capsys):
    base = {"sample": ["--checkpoint", "x", "--out", "y"], "edit": ["--checkpoint", "x", "--image", "i", "--label",
                                                                     "0", "--out", "y"],
            "eval": ["--checkpoint", "x", "--out", "y"]}[argv[0]]
    with pytest.raises(SystemExit) as e:
        main([argv[0], *base, *argv[1:]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and words in err
