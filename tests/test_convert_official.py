"""Official transformers and tokenizers -> argen: exact parameter counts, key maps against the official layouts,
synthetic round trips through `argen convert`, and one-line errors with exit code 2."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from helpers import read_layout

import argen
from argen.cli import main
from argen.pipeline import Pipeline
from argen.registry import get_preset
from argen.sampling import sampler_for

LAYOUTS = Path(__file__).parent / "data" / "layouts"


class Args:  # a class no converter allow-lists, like the argument object of VAR's train.py checkpoints
    pass

# Exact counts of argen's builds; in brackets the official figures they round to (VAR README,
# LlamaGen README, MAR paper). MAR-L / -H: the paper's 479M / 943M are 0.1% above argen's count,
# whose heads equal the official 72.2M / 151.2M; MAR-B matches its layout file tensor for tensor.
PARAMS = {
    "var-d16": 310_283_520,    # 310.28M
    "var-d20": 600_917_136,    # 600.92M
    "var-d24": 1_033_399_360,  # 1033.40M
    "var-d30": 2_010_020_356,  # 2010.02M
    "mar-b": 207_924_768,      # 208M
    "mar-l": 478_326_304,      # 479M
    "mar-h": 942_403_104,      # 943M
    "llamagen-gpt-b": 110_888_448,      # 110.9M
    "llamagen-gpt-l": 342_910_976,      # 342.9M
    "llamagen-gpt-xl": 774_699_520,     # 774.7M
    "llamagen-gpt-xxl": 1_410_972_672,  # 1411M
    "llamagen-gpt-3b": 3_096_659_200,   # 3097M
}

# family, smallest preset, layout file, container the official code saves
CASES = [
    ("var", "var-d16", "var-d16.tsv", lambda sd: sd),
    ("mar", "mar-b", "mar-b.tsv", lambda sd: {"model": {}, "model_ema": sd, "epoch": 400,
                                               "args": argparse.Namespace(model="mar_base")}),
    ("llamagen", "llamagen-gpt-b", "llamagen-gpt-b.tsv", lambda sd: {"model": sd, "steps": 10}),
]


@pytest.mark.parametrize("preset", sorted(PARAMS))
def test_official_presets_have_the_official_parameter_counts(preset):
    model = argen.build(preset, device="meta")
    assert sum(p.numel() for p in model.parameters()) == PARAMS[preset]
    assert argen.list_presets("generator").count(preset) == 1
    config_cls, _ = sampler_for(model.family)
    assert config_cls.from_dict(get_preset(preset).sampler).cfg > 0  # the official guidance, a valid config


def official_state_dict(layout: str) -> dict[str, torch.Tensor]:
    """A synthetic official state dict: every tensor of the layout, filled with its own index
    (float16 to keep it small), so a tensor that lands in the wrong place shows."""
    return {name: torch.full(shape, float(i % 2048), dtype=torch.float16 if dtype == "torch.float32" else None)
            for i, (name, (shape, dtype)) in enumerate(read_layout(LAYOUTS / layout).items())}


def convert_synthetic(tmp_path, family: str, flag: str, layout: str, container):
    """Save a synthetic official file in ``container`` format, convert it via ``flag`` (--checkpoint
    or --vae) with the CLI, and return (the official state dict, the converted argen model)."""
    sd = official_state_dict(layout)
    torch.save(container(sd), tmp_path / "official.pth")
    assert main(["convert", "--from", family, flag, str(tmp_path / "official.pth"),
                 "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    return sd, argen.load(tmp_path / "out")


@pytest.mark.parametrize("family,preset,layout,container", CASES, ids=[c[0] for c in CASES])
def test_round_trip_of_a_synthetic_official_checkpoint(family, preset, layout, container, tmp_path):
    sd, model = convert_synthetic(tmp_path, family, "--checkpoint", layout, container)
    assert model.checkpoint_meta["preset"] == preset
    assert model.checkpoint_meta["meta"]["converted_from"] == family
    ours = model.state_dict()
    derived = {k for k in sd if k not in ours}  # buffers argen recomputes (VAR's masks and level ids)
    assert all(k.rsplit(".", 1)[-1] in ("lvl_1L", "attn_bias_for_masking", "zero_k_bias") for k in derived)
    assert set(ours) == set(sd) - derived
    wrong = [k for k in ours if not torch.equal(ours[k], sd[k].to(ours[k].dtype))]
    assert wrong == []


def _run(capsys, *argv) -> str:
    assert main(["convert", *argv, "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_converter_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    sd = official_state_dict("llamagen-gpt-b.tsv")
    out = str(tmp_path / "out")

    torch.save({"model": sd}, tmp_path / "gpt.pth")
    err = _run(capsys, "--from", "var", "--checkpoint", str(tmp_path / "gpt.pth"), "--out", out)
    assert "no state dict at any of (top level), trainer.var_wo_ddp; the file holds model" in err
    torch.save(sd, tmp_path / "gpt-bare.pth")  # a bare state dict, as VAR releases its own
    err = _run(capsys, "--from", "var", "--checkpoint", str(tmp_path / "gpt-bare.pth"), "--out", out)
    assert "not a VAR checkpoint" in err  # wrong family
    err = _run(capsys, "--from", "mar", "--checkpoint", str(tmp_path / "gpt.pth"), "--out", out)
    assert "not a MAR checkpoint" in err

    missing = dict(sd)
    del missing["layers.3.feed_forward.w2.weight"]
    torch.save({"model": missing}, tmp_path / "missing.pth")
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "missing.pth"), "--out", out)
    assert "not filled: layers.3.feed_forward.w2.weight" in err

    extra = dict(sd, **{"layers.0.attention.extra": torch.ones(1)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "extra.pth"), "--out", out)
    assert "layers.0.attention.extra" in err

    (tmp_path / "cut.pth").write_bytes((tmp_path / "gpt.pth").read_bytes()[:4096])
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "cut.pth"), "--out", out)
    assert "truncated or corrupt" in err

    torch.save({"trainer": {"var_wo_ddp": {}}, "args": Args()}, tmp_path / "train.pth")
    err = _run(capsys, "--from", "var", "--checkpoint", str(tmp_path / "train.pth"), "--out", out)
    assert "will not unpickle" in err and "Args" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_ema_weights_are_chosen_where_the_file_has_them(tmp_path):
    sd = official_state_dict("llamagen-gpt-b.tsv")
    raw = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({"model": raw, "ema": sd}, tmp_path / "both.pth")
    for flag, expect in ((), sd), (("--no-ema",), raw):
        out = tmp_path / f"out{len(flag)}"
        assert main(["convert", "--from", "llamagen", "--checkpoint", str(tmp_path / "both.pth"), *flag,
                     "--out", str(out), "--quiet", "--device", "cpu"]) == 0
        w = argen.load(out).state_dict()["norm.weight"]
        assert torch.equal(w, expect["norm.weight"].float())


# ---- tokenizers -------------------------------------------------------------------------------------

# Exact counts; each equals the sum over its layout file (read from the official constructors),
# less the official usage counters argen does not keep. Official figures: VAR's VQVAE 109M,
# MAR's KL-16 66.5M (encoder 28.3M, decoder 38.2M), LlamaGen's VQ-16 72M.
TOKENIZER_PARAMS = {"var-vqvae": 108_948_355, "mar-kl16": 66_456_019, "llamagen-vq16": 71_883_403}
TOKENIZER_CASES = [  # family, preset, layout file, container, official buffers argen does not keep
    ("var", "var-vqvae", "var-vqvae.tsv", lambda sd: sd, {"quantize.ema_vocab_hit_SV"}),
    ("mar", "mar-kl16", "mar-kl16-vae.tsv", lambda sd: {"model": sd}, set()),
    ("llamagen", "llamagen-vq16", "llamagen-vq16.tsv", lambda sd: {"model": sd}, {"quantize.codebook_used"}),
]


def official_sources(family: str, key: str) -> list[str]:
    """The official tensors one argen tokenizer tensor is made of, written out by hand from the
    official module trees (independently of the converters' rename rules)."""
    p = key.split(".")
    if family == "var" and p[:3] == ["quantize", "quant_resi", "qresi_ls"]:
        return [".".join(p[:4] + p[5:])]  # the official phi is the conv itself
    if family == "llamagen":
        mid = {"block_1": "0", "attn_1": "1", "block_2": "2"}
        if p[1] == "mid":
            p[2] = mid[p[2]]
        elif p[1] in ("down", "up"):
            level = int(p[2]) if p[1] == "down" else 4 - int(p[2])  # decoder levels count from the coarsest
            p[1:3] = ["conv_blocks", str(level)]
            if p[3] == "block":
                p[3] = "res"
    if family in ("mar", "llamagen") and "qkv" in p:
        i = p.index("qkv")
        return [".".join(p[:i] + [x] + p[i + 1:]) for x in "qkv"]
    return [".".join(p)]


@pytest.mark.parametrize("preset", sorted(TOKENIZER_PARAMS))
def test_official_tokenizer_presets_have_the_official_parameter_counts(preset):
    model = argen.build(preset, device="meta")
    assert sum(p.numel() for p in model.parameters()) == TOKENIZER_PARAMS[preset]
    assert preset in argen.list_presets("tokenizer")


@pytest.mark.parametrize("family,preset,layout,container,dropped", TOKENIZER_CASES, ids=[c[0] for c in TOKENIZER_CASES])
def test_round_trip_of_a_synthetic_official_tokenizer(family, preset, layout, container, dropped, tmp_path):
    sd, model = convert_synthetic(tmp_path, family, "--vae", layout, container)
    assert model.checkpoint_meta["preset"] == preset
    ours = model.state_dict()
    fresh = {"quantize.usage_SV": 0, "quantize.initialized": 1, "train_steps": 0}  # argen's own statistics
    used = set()
    for key, t in ours.items():
        if key in fresh:
            assert torch.all(t == fresh[key]), key
            continue
        sources = official_sources(family, key)
        used.update(sources)
        assert torch.equal(t, torch.cat([sd[s] for s in sources]).to(t.dtype)), key
    assert used == set(sd) - dropped  # every official tensor placed once, nothing else left behind


def test_generator_and_tokenizer_convert_into_one_sampling_folder(tmp_path):
    torch.save({"model": official_state_dict("llamagen-gpt-b.tsv")}, tmp_path / "gpt.pt")
    torch.save({"model": official_state_dict("llamagen-vq16.tsv")}, tmp_path / "vq.pt")
    assert main(["convert", "--from", "llamagen", "--checkpoint", str(tmp_path / "gpt.pt"),
                 "--vae", str(tmp_path / "vq.pt"), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["preset"] == "llamagen-gpt-b" and cfg["meta"]["sampler"] == get_preset("llamagen-gpt-b").sampler
    pipe = Pipeline.from_pretrained(tmp_path / "out")  # what `argen sample --checkpoint` opens
    assert pipe.tokenizer.checkpoint_meta["preset"] == "llamagen-vq16"
    assert pipe.tokenizer.codebook_size == pipe.generator.config.vocab_size
    assert pipe.tokenizer.grid == (16, 16)


def test_tokenizer_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    out = str(tmp_path / "out")
    err = _run(capsys, "--from", "var", "--out", out)
    assert "give --checkpoint" in err and "--vae" in err
    torch.save({"model": official_state_dict("llamagen-vq16.tsv")}, tmp_path / "vq.pt")
    err = _run(capsys, "--from", "mar", "--vae", str(tmp_path / "vq.pt"), "--out", out)
    assert "not a MAR KL-16 checkpoint" in err  # wrong family
    sd = official_state_dict("mar-kl16-vae.tsv")
    del sd["decoder.mid.attn_1.v.bias"]
    torch.save({"model": sd}, tmp_path / "kl.pt")
    err = _run(capsys, "--from", "mar", "--vae", str(tmp_path / "kl.pt"), "--out", out)
    assert "decoder.mid.attn_1.v.bias" in err  # a q without its v is named
    # a generator that converts cleanly is not written when its tokenizer fails
    torch.save({"model": official_state_dict("llamagen-gpt-b.tsv")}, tmp_path / "gpt.pt")
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "gpt.pt"), "--vae", str(tmp_path / "kl.pt"),
               "--out", out)
    assert "not a LlamaGen VQ checkpoint" in err
    assert not (tmp_path / "out").exists()
