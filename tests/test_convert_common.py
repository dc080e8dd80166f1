"""The pieces every converter shares: safe reading, finding the state dict, strict key maps."""

import argparse

import pytest
import torch

import argen
from argen.cli import main
from argen.convert import ConvertError, Tensors, available_families, load_strict, pick, read_official, require
from argen.models import list_presets


def test_every_preset_builds_on_the_meta_device_without_memory():
    for name in list_presets():
        model = argen.build(name, device="meta")
        assert all(t.is_meta for t in model.state_dict().values()), name


def test_read_official_refuses_unlisted_objects_and_names_them(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ConvertError, match=r"holds a argparse\.Namespace object, which argen will not unpickle"):
        read_official(path)
    obj = read_official(path, allow=[argparse.Namespace])
    assert obj["args"].lr == 1e-4 and torch.equal(obj["model"]["w"], torch.ones(2))


def test_read_official_errors_are_one_line(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"w": torch.ones(1000)}, path)
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:500])
    for bad, message in [(tmp_path / "cut.pth", "truncated or corrupt"), (tmp_path / "nope.pth", "no such file")]:
        with pytest.raises(ConvertError, match=message) as e:
            read_official(bad)
        assert "\n" not in str(e.value)
    torch.save({"w": torch.ones(3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(read_official(tmp_path / "legacy.pth")["w"], torch.ones(3))  # old format, read whole


def test_pick_prefers_the_first_candidate_present():
    ema, raw = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    assert pick({"model": raw, "model_ema": ema}, "f", ["model_ema", "model"]) == (ema, "model_ema")
    assert pick({"model": raw}, "f", ["model_ema", "model"]) == (raw, "model")
    assert pick({"trainer": {"net": raw}}, "f", ["trainer.net"])[1] == "trainer.net"
    with pytest.raises(ConvertError, match="no state dict at any of model_ema, model; the file holds epoch"):
        pick({"epoch": 3}, "f", ["model_ema", "model"])


def test_require_names_the_family_and_the_missing_key():
    with pytest.raises(ConvertError, match="not a VAR checkpoint .no blocks.0.attn.mat_qkv.weight"):
        require({"tok_embeddings.weight": torch.ones(1)}, "f", "VAR", ["blocks.0.attn.mat_qkv.weight"])


def test_tensors_report_what_no_rule_used():
    t = Tensors({"a.weight": torch.ones(1), "b.weight": torch.ones(1), "freqs_cis": torch.ones(1)}, "f",
                ignore=["freqs_cis"])
    assert list(t.rename([(r"a\.(.*)", r"x.\1")])) == ["x.weight"]
    with pytest.raises(ConvertError, match=r"1 tensor\(s\) that no key map uses: b\.weight"):
        t.finish()
    t.take("b.weight")
    t.finish()  # freqs_cis is ignored by name
    with pytest.raises(ConvertError, match="missing tensor c.weight"):
        t.take("c.weight")


def test_load_strict_names_every_difference_and_fills_meta_models():
    with torch.device("meta"):
        model = torch.nn.Linear(3, 2)
    with pytest.raises(ConvertError, match=r"argen tensor\(s\) not filled: bias"):
        load_strict(model, {"weight": torch.ones(2, 3)}, "f")
    with pytest.raises(ConvertError, match=r"shape mismatch\(es\): weight \(3, 2\) vs argen \(2, 3\)"):
        load_strict(model, {"weight": torch.ones(3, 2), "bias": torch.ones(2)}, "f")
    with pytest.raises(ConvertError, match=r"with no argen place: extra"):
        load_strict(model, {"weight": torch.ones(2, 3), "bias": torch.ones(2), "extra": torch.ones(1)}, "f")
    load_strict(model, {"weight": torch.ones(2, 3, dtype=torch.float16), "bias": torch.ones(2)}, "f")
    assert model.weight.dtype == torch.float32 and not model.weight.is_meta


def test_convert_cli_unknown_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["convert", "--from", "stylegan", "--checkpoint", str(tmp_path / "nope.pth"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--from must be one of" in err and "'stylegan'" in err
    for family in available_families():
        assert main(["convert", "--from", family, "--checkpoint", str(tmp_path / "nope.pth"),
                     "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no such file" in err
