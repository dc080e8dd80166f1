"""Tests for argen.checkpoint (folders, atomic writes, training state) and argen.config."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from helpers import random_images, tiny_msvq, tiny_msvq_config, tiny_var_config, tiny_vq

from argen import checkpoint as ckpt
from argen.checkpoint import (
    flatten_state,
    load_tensors,
    load_train_state,
    save_model,
    save_tensors,
    save_train_state,
    unflatten_state,
)
from argen.errors import ArgenError, CheckpointError, ConfigError
from argen.generators.var import VARConfig
from argen.models import load_model
from argen.tokenizers.msvq import MSVQConfig, MultiScaleVQ
from argen.training import outdir
from argen.training.trainer import TrainConfig


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def trained_msvq() -> MultiScaleVQ:
    """A tiny tokenizer whose buffers (usage, initialized, train_steps) are not at their defaults."""
    tok = tiny_msvq().train()
    batch = (random_images(4), torch.zeros(4, dtype=torch.long))
    tok.begin_training(batch)
    tok.loss(batch)
    tok.end_step()
    return tok.eval()


@pytest.fixture
def saved(tmp_path):
    tok = trained_msvq()
    d = tmp_path / "tok"
    save_model(d, tok, preset="tiny", meta={"note": "x"})
    return d, tok


# ------------------------------------------------------------------------------------ round trips


def test_tokenizer_round_trip(saved):
    d, tok = saved
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(d)
    assert type(loaded) is MultiScaleVQ and loaded.config == tok.config and not loaded.training
    a, b = tok.state_dict(), loaded.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert int(loaded.quantize.initialized) == 1 and int(loaded.train_steps) == 1
    x = random_images(3, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(tok.encode(x), loaded.encode(x)))
    assert torch.equal(tok.decode(tok.encode(x)), loaded.decode(loaded.encode(x)))
    record = ckpt.read_record(d)
    assert (record.cls, record.preset, record.meta) == ("MultiScaleVQ", "tiny", {"note": "x"})
    assert not hasattr(loaded, "checkpoint_meta")  # the record is explicit, not an attribute of the module
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["class"] == "MultiScaleVQ" and cfg["config"]["scales"] == [1, 2, 4]


def test_vq_tokenizer_round_trip(tmp_path):
    tok = tiny_vq()
    save_model(tmp_path, tok)
    loaded = load_model(tmp_path)
    x = random_images(2)
    assert torch.equal(tok.encode(x), loaded.encode(x))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tok.state_dict().items())


def test_save_model_with_an_override_state_dict(tmp_path):
    tok = tiny_msvq()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in tok.state_dict().items()}
    save_model(tmp_path, tok, state_dict=other)
    loaded = load_model(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in other.items())


def test_save_overwrites_an_existing_checkpoint(tmp_path):
    save_model(tmp_path, tiny_msvq(seed=0))
    tok1 = tiny_msvq(seed=1)
    save_model(tmp_path, tok1)
    loaded = load_model(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in tok1.state_dict().items())


# ------------------------------------------------------------------------------------ errors


def test_missing_dir(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "nope")
    assert "nope" in one_line(e)


def test_missing_config_json(saved):
    d, _ = saved
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    assert "config.json" in one_line(e)


@pytest.mark.parametrize("text", ['{"class": "MultiScaleVQ", "con', "", "[1, 2]", '{"class": "MultiScaleVQ"}',
                                  "\udcff"])
def test_corrupt_config_json(saved, text):
    d, _ = saved
    if text == "\udcff":
        (d / "config.json").write_bytes(b"\xff\xfe\x00{")
    else:
        (d / "config.json").write_text(text)
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    assert "config.json" in one_line(e)


@pytest.mark.parametrize("config_value", [None, 5])
def test_config_json_whose_config_is_not_an_object(saved, config_value):
    """read_config checks that the keys exist but not that "config" is an object: a hand-edited
    ``"config": null`` ends in a TypeError from ``set(None)`` inside Config.from_dict."""
    d, _ = saved
    (d / "config.json").write_text(json.dumps({"class": "MultiScaleVQ", "config": config_value}))
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    one_line(e)


@pytest.mark.parametrize("cfg", [
    {"class": "NoSuchModel", "config": {}},
    {"class": "MultiScaleVQ", "config": {"bogus": 1}},
    {"class": "MultiScaleVQ", "config": {"scales": [1, 2, 3]}},
])
def test_config_json_with_bad_content_is_a_user_error(saved, cfg):
    d, _ = saved
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArgenError) as e:
        load_model(d)
    one_line(e)


def test_format_versions_newer_is_refused_older_loads(saved):
    """The version policy (argen.checkpoint's doc): a newer format says so in one line; older folders load."""
    d, tok = saved
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == ckpt.FORMAT and cfg["argen_version"]
    (d / "config.json").write_text(json.dumps({**cfg, "format": ckpt.FORMAT + 1, "argen_version": "9.0"}))
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    msg = one_line(e)
    assert f"format {ckpt.FORMAT + 1}" in msg and "argen 9.0" in msg and "upgrade argen" in msg
    old = {k: v for k, v in cfg.items() if k != "format"}  # as argen 0.1 wrote it
    (d / "config.json").write_text(json.dumps({**old, "argen_version": "0.1.0"}))
    back = load_model(d)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), tok.state_dict().values()))
    assert ckpt.read_record(d).format == 1
    (d / "config.json").write_text(json.dumps({**cfg, "format": "1"}))
    with pytest.raises(CheckpointError, match="'format' must be an integer"):
        load_model(d)


@pytest.mark.parametrize("keep", [0, 5, 7, 100, -8])
def test_truncated_weights(saved, keep):
    d, _ = saved
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:keep])  # a negative keep cuts from the end
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    assert "model.safetensors" in one_line(e)


def test_missing_weights(saved):
    d, _ = saved
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    assert "model.safetensors" in one_line(e)


def test_weights_of_the_wrong_shape(saved):
    d, _ = saved
    bigger = tiny_msvq(codebook_size=32)
    save_tensors(d / "model.safetensors", bigger.state_dict())
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    msg = one_line(e)
    assert "size mismatch" in msg and "quantize" in msg


def test_weights_with_missing_keys(saved):
    d, tok = saved
    sd = tok.state_dict()
    del sd["quantize.embedding.weight"]
    save_tensors(d / "model.safetensors", sd)
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    assert "quantize.embedding.weight" in one_line(e)


def test_wrong_shape_message_is_plain_text(saved):
    """The message shows the first detail line of torch's error, not a Python list repr of it
    (today: ``do not fit MultiScaleVQ: ['\\tsize mismatch for ...']``)."""
    d, _ = saved
    save_tensors(d / "model.safetensors", tiny_msvq(codebook_size=32).state_dict())
    with pytest.raises(CheckpointError) as e:
        load_model(d)
    msg = one_line(e)
    assert "['" not in msg and "\\t" not in msg, msg


def test_load_train_state_missing(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_train_state(tmp_path)
    assert "train_state" in one_line(e)


def test_load_train_state_corrupt(tmp_path):
    save_train_state(tmp_path, {"step": 1, "w": torch.ones(3)})
    p = tmp_path / "train_state.safetensors"
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(CheckpointError) as e:
        load_train_state(tmp_path)
    one_line(e)


# ------------------------------------------------------------------------------------ atomic writes


def test_atomic_writes_leave_no_temp_files(tmp_path):
    tok = trained_msvq()
    save_model(tmp_path, tok)
    save_train_state(tmp_path, {"model": tok.state_dict(), "step": 3})
    save_model(tmp_path, tok)  # overwrite
    names = sorted(os.listdir(tmp_path))
    assert names == ["config.json", "model.safetensors", "train_state.safetensors"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "model.safetensors"
    save_tensors(path, {"w": torch.ones(2)})

    def bad_write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    with pytest.raises(CheckpointError, match="cannot write .*disk full"):  # one line, not a traceback
        ckpt._atomic_write(path, bad_write)
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert torch.equal(load_tensors(path)["w"], torch.ones(2))


def test_save_tensors_accepts_views_and_tied_tensors(tmp_path):
    """save_tensors promises "plain contiguous copies" because safetensors refuses shared storage,
    but ``.contiguous()`` returns the same tensor when it already is contiguous: tied weights (or a
    state dict holding a tensor and a view of it) raise safetensors' multi-line RuntimeError."""
    w = torch.arange(6.0)
    save_tensors(tmp_path / "x.safetensors", {"a": w, "b": w.view(2, 3), "c": w[2:4]})
    out = load_tensors(tmp_path / "x.safetensors")
    assert torch.equal(out["a"], w) and torch.equal(out["b"], w.view(2, 3)) and torch.equal(out["c"], w[2:4])


def test_save_tensors_non_contiguous(tmp_path):
    w = torch.arange(12.0).view(3, 4)
    save_tensors(tmp_path / "x.safetensors", {"t": w.t()})
    assert torch.equal(load_tensors(tmp_path / "x.safetensors")["t"], w.t())


# ------------------------------------------------------------------------------------ training state


def adamw_after_steps(seed: int = 0, steps: int = 3):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW([{"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
                             {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95))
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    return model, opt


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert set(a["state"]) == set(b["state"])
    for k in a["state"]:
        assert set(a["state"][k]) == set(b["state"][k])
        for name, v in a["state"][k].items():
            assert torch.equal(v, b["state"][k][name]), (k, name)
    assert len(a["param_groups"]) == len(b["param_groups"])
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        assert set(ga) == set(gb)
        for key in ga:
            va, vb = ga[key], gb[key]
            as_list = [list(v) if isinstance(v, tuple) else v for v in (va, vb)]  # JSON: tuples -> lists
            assert as_list[0] == as_list[1], key


def test_flatten_unflatten_adamw_round_trip():
    model, opt = adamw_after_steps()
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state("s", sd, tensors)
    assert tensors and all(isinstance(v, torch.Tensor) for v in tensors.values())
    # The skeleton is plain JSON; the tensors go through a file in real use, so they must not alias
    # the live optimizer's (torch's load_state_dict keeps same-device tensors without copying).
    skeleton = json.loads(json.dumps(skeleton))
    back = unflatten_state(skeleton, {k: v.clone() for k, v in tensors.items()})
    back["state"] = {int(k): v for k, v in back["state"].items()}  # as the trainer does
    assert_same_optimizer_state(sd, back)

    # A fresh optimizer loaded from it continues exactly like the original.
    model2, opt2 = adamw_after_steps(steps=0)
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(back)
    for m, o in ((model, opt), (model2, opt2)):
        torch.manual_seed(1)
        o.zero_grad()
        m(torch.randn(5, 3)).pow(2).sum().backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))


def test_flatten_state_structure():
    t1, t2 = torch.ones(2), torch.zeros(1, dtype=torch.long)
    obj = {"a": t1, 3: [t2, 1.5, "x", None, True], "n": {"deep": (t1, 2)}}
    tensors: dict[str, torch.Tensor] = {}
    skel = flatten_state("s", obj, tensors)
    assert skel == {"a": {"__t": "s/a"}, "3": [{"__t": "s/3/0"}, 1.5, "x", None, True],
                    "n": {"deep": [{"__t": "s/n/deep/0"}, 2]}}
    assert set(tensors) == {"s/a", "s/3/0", "s/n/deep/0"}
    back = unflatten_state(json.loads(json.dumps(skel)), tensors)
    assert torch.equal(back["a"], t1) and torch.equal(back["3"][0], t2)
    assert back["3"][1:] == [1.5, "x", None, True]
    assert torch.equal(back["n"]["deep"][0], t1) and back["n"]["deep"][1] == 2


def test_save_load_train_state_round_trip(tmp_path):
    model, opt = adamw_after_steps()
    rng = torch.get_rng_state()
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "ema": {},
        "step": 17, "rng": {"cpu": rng}, "train_config": TrainConfig(steps=20).to_dict(),
    }
    save_train_state(tmp_path, state)
    back = load_train_state(tmp_path)
    assert back["step"] == 17 and back["ema"] == {}
    assert back["train_config"] == TrainConfig(steps=20).to_dict()
    assert TrainConfig.from_dict(back["train_config"]) == TrainConfig(steps=20)
    assert torch.equal(back["rng"]["cpu"], rng) and back["rng"]["cpu"].dtype == torch.uint8
    assert all(torch.equal(v, back["model"][k]) for k, v in model.state_dict().items())
    opt_state = back["optimizer"]
    opt_state["state"] = {int(k): v for k, v in opt_state["state"].items()}
    assert_same_optimizer_state(opt.state_dict(), opt_state)


# ------------------------------------------------------------------------------------ config


def test_config_json_round_trip_restores_tuples():
    for c in (tiny_msvq_config(), tiny_var_config(), TrainConfig(steps=7, lr=3e-4)):
        d = json.loads(c.to_json())
        back = type(c).from_dict(d)
        assert back == c
    back = MSVQConfig.from_dict(json.loads(tiny_msvq_config().to_json()))
    assert isinstance(back.scales, tuple) and isinstance(back.ch_mult, tuple)
    assert back.scales == (1, 2, 4) and back.ch_mult == (1, 2)


def test_config_from_dict_rejects_unknown_keys():
    d = tiny_var_config().to_dict()
    d["dept"] = 3
    with pytest.raises(ConfigError) as e:
        VARConfig.from_dict(d)
    assert "dept" in one_line(e)


def test_config_from_dict_validates():
    d = tiny_msvq_config().to_dict()
    d["scales"] = [1, 2, 3]
    with pytest.raises(ConfigError):
        MSVQConfig.from_dict(d)


def test_config_replace():
    c = tiny_msvq_config()
    c2 = c.replace(codebook_size=32, beta=0.5)
    assert (c2.codebook_size, c2.beta) == (32, 0.5) and c.codebook_size == 16
    assert c2.replace(codebook_size=16, beta=c.beta) == c
    with pytest.raises(ConfigError) as e:
        c.replace(scales=(1, 2, 3))
    one_line(e)
    with pytest.raises(ConfigError) as e:
        c.replace(recon_loss="bad")
    one_line(e)
    with pytest.raises(ConfigError) as e:
        c.replace(codebok_size=3)
    assert "codebok_size" in one_line(e)


def test_every_config_class_is_a_frozen_dataclass():
    # a config that could be mutated after validation, or after its checkpoint was written, would lie
    from argen.models import MODELS
    from argen.registry import SAMPLERS
    from argen.sampling import sampler_for  # noqa: F401  (registers every sampler)

    classes = {cls.config_class for cls in MODELS.values()} | {s.config_class for s in SAMPLERS.values()} | {TrainConfig}
    assert len(classes) >= 10
    for cls in classes:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls.__name__


def test_json_files_are_strict_json(tmp_path):
    ckpt.write_json(tmp_path / "m.json", {"loss": float("nan"), "x": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail) == {"loss": None, "x": [None, 1.0]}


def test_read_log_drops_a_torn_last_line_only(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n{"step": 3, "lo')
    with caplog.at_level("WARNING"):
        assert [r["step"] for r in ckpt.read_log(log)] == [1, 2]
    assert "torn" in caplog.text
    ckpt.truncate_log(log, 1)
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n'
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')  # broken in the middle: corrupt, not torn
    with pytest.raises(CheckpointError, match="line 2"):
        ckpt.read_log(log)


def test_check_run_folder(tmp_path):
    out = tmp_path / "run"
    assert outdir.check_run_folder(out, resume=False, overwrite=False) == []  # a new folder
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert outdir.check_run_folder(out, resume=False, overwrite=False) == []  # no run in it
    (out / "log.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(CheckpointError, match="--resume .*--overwrite"):
        outdir.check_run_folder(out, resume=False, overwrite=False)
    assert outdir.check_run_folder(out, resume=True, overwrite=False) == []
    outdir.clear_run(outdir.check_run_folder(out, resume=False, overwrite=True))
    assert os.listdir(out) == ["notes.txt"]  # only the old run's files go
    (tmp_path / "elsewhere").mkdir()
    (out / "tokenizer").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="symlink"):
        outdir.check_run_folder(out, resume=True, overwrite=False)


def test_lock_folder_refuses_a_second_holder(tmp_path):
    with outdir.lock_folder(tmp_path), pytest.raises(CheckpointError, match="another training"), \
            outdir.lock_folder(tmp_path):
        pass
    with outdir.lock_folder(tmp_path):  # released on exit
        pass
