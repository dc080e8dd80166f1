"""Official transformers and tokenizers -> argen: exact parameter counts, key maps against the official layouts,
synthetic round trips through `argen convert`, and one-line errors with exit code 2.

The full official sizes are checked without memory, on the meta device: parameter counts, and every
tensor's name and shape against the layout files. The round trips through the converters run on
reduced sizes of the same layouts (``SMALL_FIELDS``: the same module trees, so the same tensor names, at
small widths), which the converters build through a monkeypatched ``argen.build``."""

import argparse
import functools
import json
from pathlib import Path

import pytest
import torch
from helpers import read_layout

import argen
from argen.checkpoint import read_record
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
    # 775M: the official 777,678,080 parameters, its uncond_embedding buffer (120 x 2048, a parameter in
    # argen) and the caption MLP's two biases (2 x 1280, zero when converted: the official MLP has none)
    "llamagen-t2i-xl": 777_926_400,
}

# official buffers (by last name part) that argen recomputes: VAR's level ids and masks
DERIVED = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias")
# family, smallest preset, layout file, container the official code saves
CASES = [
    ("var", "var-d16", "var-d16.tsv", lambda sd: sd),
    ("mar", "mar-b", "mar-b.tsv", lambda sd: {"model": {}, "model_ema": sd, "epoch": 400,
                                               "args": argparse.Namespace(model="mar_base")}),
    ("llamagen", "llamagen-gpt-b", "llamagen-gpt-b.tsv", lambda sd: {"model": sd, "steps": 10}),
]
# LlamaGen's text-to-image GPT: its CaptionEmbedder under argen's names (argen -> official, written out
# from the official module tree), and argen's tensors it lacks with the value they are converted to
T2I_CASES = [("llamagen", "llamagen-t2i-xl", "llamagen-t2i-xl.tsv", lambda sd: {"model": sd, "steps": 10})]
T2I_NAMES = {"text.token_proj.0.weight": "cls_embedding.cap_proj.fc1.weight",
             "text.token_proj.2.weight": "cls_embedding.cap_proj.fc2.weight",
             "text.null_tokens_LD": "cls_embedding.uncond_embedding"}
T2I_FRESH = {"text.token_proj.0.bias": 0, "text.token_proj.2.bias": 0}


# The official presets at reduced sizes of the same layout: depths, levels, blocks and attention as
# officially (the same tensor names, and ``identify`` still tells the sizes apart by depth), small
# widths. LlamaGen's GPT keeps its 16384-code vocabulary and VQ-16 its 16384 x 8 codebook (what the
# converter checks), MAR's KL-16 its 16 latent channels. A tuple key names one config field by its
# current name and its name before argen's config renames (``width``, ``heads`` in every family).
SMALL_FIELDS = {
    "var-d16": {"width": 32, ("heads", "num_heads"): 2, "vocab_size": 64, "num_classes": 10},
    "mar-b": {"width": 32, ("heads", "enc_heads"): 2, "dec_width": 32, "dec_heads": 2, "head_width": 32,
              "num_classes": 10, "buffer_size": 4},
    "llamagen-gpt-b": {("width", "dim"): 32, ("heads", "n_head"): 2, "multiple_of": 16, "num_classes": 10},
    "llamagen-t2i-xl": {("width", "dim"): 32, ("heads", "n_head"): 2, "multiple_of": 16},  # 120 x 2048 captions
    "var-vqvae": {"ch": 8, "groups": 4, "codebook_size": 64},
    "mar-kl16": {"ch": 8, "groups": 4},
    "llamagen-vq16": {"ch": 8, "groups": 4, "z_channels": 8},
}


# argen's own statistics of a converted codebook tokenizer, and the value each starts from
FRESH = {"quantize.usage_SV": 0, "quantize.initialized": 1, "train_steps": 0}


@functools.cache
def small_overrides(preset: str) -> dict:
    """``SMALL_FIELDS[preset]`` as ``build`` overrides, each under the name the preset's config has."""
    have = argen.build(preset, device="meta").config.to_dict()
    out = {}
    for names, value in SMALL_FIELDS[preset].items():
        [name] = [n for n in ((names,) if isinstance(names, str) else names) if n in have]  # exactly one
        out[name] = value
    return out


def build_small(preset: str) -> torch.nn.Module:
    """The preset at its ``SMALL_FIELDS`` size, on the meta device."""
    return argen.build(preset, device="meta", **small_overrides(preset))


@pytest.fixture
def small(monkeypatch):
    """Convert at the ``SMALL_FIELDS`` sizes: ``build`` (through which the converters build the preset
    ``identify`` picked: ``argen.build`` and the ``argen.models.build`` behind it, where that module
    exists) applies them, and LlamaGen's size table knows GPT-B and GPT-XL by their small widths (``identify``
    matches layers and width). Applying the overrides twice changes nothing."""
    import importlib

    from argen.convert import llamagen

    overrides = {preset: small_overrides(preset) for preset in SMALL_FIELDS}  # before build is patched
    for name in ("argen", "argen.models"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        monkeypatch.setattr(module, "build", lambda preset, device="cpu", _build=module.build, **kw:
                            _build(preset, device, **{**overrides.get(preset, {}), **kw}))
    sizes = {}
    for size, preset in (("B", "llamagen-gpt-b"), ("XL", "llamagen-t2i-xl")):
        n_layer, heads, _ = llamagen.LLAMAGEN_SIZES[size]
        sizes[size] = (n_layer, heads, build_small(preset).state_dict()["tok_embeddings.weight"].shape[1])
    monkeypatch.setattr(llamagen, "LLAMAGEN_SIZES", sizes)


@pytest.mark.parametrize("preset", sorted(PARAMS))
def test_official_presets_have_the_official_parameter_counts(preset):
    model = argen.build(preset, device="meta")
    assert sum(p.numel() for p in model.parameters()) == PARAMS[preset]
    assert argen.list_presets("generator").count(preset) == 1
    assert sampler_for(model.family).config_class.from_dict(get_preset(preset).sampler).cfg > 0  # the official guidance, a valid config


def official_shapes(family: str, model: torch.nn.Module, tokenizer: bool) -> dict[str, tuple[int, ...]]:
    """Official tensor name -> shape for every tensor of the argen ``model``, by the hand-written maps:
    the identity for the transformers, ``official_sources`` for the tokenizers (a fused ``qkv`` is
    three official tensors, a third of its output channels each)."""
    out = {}
    for key, t in model.state_dict().items():
        if key in (FRESH if tokenizer else T2I_FRESH):
            continue
        sources = official_sources(family, key) if tokenizer else [T2I_NAMES.get(key, key)]
        for s in sources:
            assert s not in out, s
            out[s] = (t.shape[0] // len(sources), *t.shape[1:])
    return out


def official_state_dict(layout: str) -> dict[str, torch.Tensor]:
    """A synthetic official state dict at the ``SMALL_FIELDS`` size of the layout's preset: every tensor of
    the layout (its name and dtype; its shape at the small size), filled with its own index (float16
    to keep it small), so a tensor that lands in the wrong place shows. Buffers argen does not have
    keep the layout's shape."""
    family, preset, tokenizer = {c[2]: (c[0], c[1], c in TOKENIZER_CASES)
                                 for c in CASES + T2I_CASES + TOKENIZER_CASES}[layout]
    shapes = official_shapes(family, build_small(preset), tokenizer)
    out = {}
    for i, (name, (shape, dtype)) in enumerate(read_layout(LAYOUTS / layout).items()):
        shape = shapes.get(name, shape)
        out[name] = torch.full(shape, float(i % 2048), dtype=torch.float16 if dtype == "torch.float32" else None)
    return out


def convert_synthetic(tmp_path, family: str, flag: str, layout: str, container):
    """Save a synthetic official file in ``container`` format, convert it via ``flag`` (--checkpoint
    or --vae) with the CLI, and return (the official state dict, the converted argen model)."""
    sd = official_state_dict(layout)
    torch.save(container(sd), tmp_path / "official.pth")
    assert main(["convert", "--from", family, flag, str(tmp_path / "official.pth"),
                 "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    return sd, argen.load(tmp_path / "out")


@pytest.mark.parametrize("family,preset,layout,container", CASES, ids=[c[0] for c in CASES])
def test_round_trip_of_a_synthetic_official_checkpoint(family, preset, layout, container, small, tmp_path):
    sd, model = convert_synthetic(tmp_path, family, "--checkpoint", layout, container)
    record = read_record(tmp_path / "out")
    assert record.preset == preset and record.meta["converted_from"] == family
    ours = model.state_dict()
    derived = {k for k in sd if k not in ours}  # buffers argen recomputes (VAR's masks and level ids)
    assert all(k.rsplit(".", 1)[-1] in DERIVED for k in derived)
    assert set(ours) == set(sd) - derived
    wrong = [k for k in ours if not torch.equal(ours[k], sd[k].to(ours[k].dtype))]
    assert wrong == []


def _run(capsys, *argv) -> str:
    assert main(["convert", *argv, "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_converter_errors_are_one_line_with_exit_code_2(small, tmp_path, capsys):
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


def test_ema_weights_are_chosen_where_the_file_has_them(small, tmp_path):
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
def test_round_trip_of_a_synthetic_official_tokenizer(family, preset, layout, container, dropped, small, tmp_path):
    sd, model = convert_synthetic(tmp_path, family, "--vae", layout, container)
    assert read_record(tmp_path / "out").preset == preset
    ours = model.state_dict()
    used = set()
    for key, t in ours.items():
        if key in FRESH:
            assert torch.all(t == FRESH[key]), key
            continue
        sources = official_sources(family, key)
        used.update(sources)
        assert torch.equal(t, torch.cat([sd[s] for s in sources]).to(t.dtype)), key
    assert used == set(sd) - dropped  # every official tensor placed once, nothing else left behind


LAYOUT_CASES = [(family, preset, layout, False, DERIVED) for family, preset, layout, _ in CASES + T2I_CASES] + [
    (family, preset, layout, True, dropped) for family, preset, layout, _, dropped in TOKENIZER_CASES]


@pytest.mark.parametrize("family,preset,layout,tokenizer,left", LAYOUT_CASES,
                         ids=[f"{c[0]}-{'tokenizer' if c[3] else 't2i' if 't2i' in c[1] else 'generator'}"
                              for c in LAYOUT_CASES])
def test_full_size_presets_match_their_official_layouts_tensor_for_tensor(family, preset, layout, tokenizer, left):
    """The official sizes, which the round trips do not build: every argen tensor of the full-size
    preset (on the meta device) has its official counterpart(s) by the hand-written map, of exactly
    the layout's shape, and every official tensor is used but the buffers argen derives or drops."""
    shapes = official_shapes(family, argen.build(preset, device="meta"), tokenizer)
    official = {name: shape for name, (shape, _) in read_layout(LAYOUTS / layout).items()}
    assert set(shapes) <= set(official), sorted(set(shapes) - set(official))[:5]
    wrong = [f"{k}: {shapes[k]} vs official {official[k]}" for k in shapes if shapes[k] != official[k]]
    assert wrong == []
    rest = set(official) - set(shapes)
    if tokenizer:
        assert rest == left
    else:
        assert all(k.rsplit(".", 1)[-1] in left for k in rest), sorted(rest)[:5]


def test_generator_and_tokenizer_convert_into_one_sampling_folder(small, tmp_path):
    torch.save({"model": official_state_dict("llamagen-gpt-b.tsv")}, tmp_path / "gpt.pt")
    torch.save({"model": official_state_dict("llamagen-vq16.tsv")}, tmp_path / "vq.pt")
    assert main(["convert", "--from", "llamagen", "--checkpoint", str(tmp_path / "gpt.pt"),
                 "--vae", str(tmp_path / "vq.pt"), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["preset"] == "llamagen-gpt-b" and cfg["meta"]["sampler"] == get_preset("llamagen-gpt-b").sampler
    pipe = Pipeline.from_pretrained(tmp_path / "out")  # what `argen sample --checkpoint` opens
    assert read_record(tmp_path / "out" / "tokenizer").preset == "llamagen-vq16"
    assert pipe.tokenizer.codebook_size == pipe.generator.config.vocab_size
    assert pipe.tokenizer.grid == (16, 16)
    # the model cards, written inside the folder's unit; the weights keep the official release's license
    assert "license: other" in (tmp_path / "out" / "README.md").read_text()
    assert "llamagen-vq16" in (tmp_path / "out" / "tokenizer" / "README.md").read_text()


def test_a_full_disk_leaves_no_half_written_folder(small, tmp_path, capsys, monkeypatch):
    """The generator is written, the tokenizer's weights fail (ENOSPC): nothing at --out, no temporary
    folder beside it; then an --out that holds a checkpoint is refused, an empty one is filled."""
    import errno

    import argen.checkpoint

    torch.save({"model": official_state_dict("llamagen-gpt-b.tsv")}, tmp_path / "gpt.pt")
    torch.save({"model": official_state_dict("llamagen-vq16.tsv")}, tmp_path / "vq.pt")
    argv = ["--from", "llamagen", "--checkpoint", str(tmp_path / "gpt.pt"), "--vae", str(tmp_path / "vq.pt"),
            "--out", str(tmp_path / "out")]
    save = argen.checkpoint.save_tensors

    def full_disk(path, tensors, metadata=None):
        if Path(path).parent.name == "tokenizer":
            raise OSError(errno.ENOSPC, "No space left on device")
        save(path, tensors, metadata)

    monkeypatch.setattr(argen.checkpoint, "save_tensors", full_disk)
    assert "No space left" in _run(capsys, *argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt.pt", "vq.pt"]
    monkeypatch.setattr(argen.checkpoint, "save_tensors", save)
    (tmp_path / "out").mkdir()  # an empty --out is fine
    assert main(["convert", *argv, "--quiet", "--device", "cpu"]) == 0
    assert (tmp_path / "out" / "tokenizer" / "model.safetensors").is_file()
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "remove it or choose another --out" in _run(capsys, *argv)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before


def test_tokenizer_errors_are_one_line_with_exit_code_2(small, tmp_path, capsys):
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


def test_greedy_speculative_decoding_equals_greedy_decoding_on_a_converted_gpt_b(small, tmp_path):
    """SJD on a checkpoint converted from LlamaGen's layout (GPT-B's depth, vocabulary and 16 x 16 grid at
    a small width, random weights): with top-k 1 its tokens are greedy raster decoding's, token for token."""
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.5).to(v.dtype) if v.is_floating_point() else v
          for k, v in official_state_dict("llamagen-gpt-b.tsv").items()}
    torch.save({"model": sd}, tmp_path / "gpt.pt")
    assert main(["convert", "--from", "llamagen", "--checkpoint", str(tmp_path / "gpt.pt"), "--out",
                 str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    model = argen.load(tmp_path / "out").eval()
    labels = torch.tensor([3])
    plain, sjd = sampler_for("raster"), sampler_for("raster", "sjd")
    want = plain.sample(model, None, labels, plain.config_class(cfg=1.0, top_k=1), torch.Generator())
    assert len(set(want.flatten().tolist())) > 10  # the converted weights give varied greedy tokens
    got = sjd.sample(model, None, labels, sjd.config_class(cfg=1.0, top_k=1), torch.Generator())
    assert torch.equal(got, want)


# ---- LlamaGen text-to-image ---------------------------------------------------------------------------

def t2i_features(path: Path, n: int = 2) -> list[str]:
    """A precomputed caption features file as a user makes it from T5: n captions of 120 x 2048,
    right-padded (argen left-pads them, as the official sampler), of different lengths."""
    from argen.text import save_precomputed

    g = torch.Generator().manual_seed(0)
    mask = torch.arange(120)[None] < torch.tensor([7 + 30 * i for i in range(n)])[:, None]
    captions = [f"caption {i}" for i in range(n)]
    save_precomputed(path, torch.randn(n, 120, 2048, generator=g) * mask[..., None], mask, captions)
    return captions


def test_text_to_image_gpt_converts_loads_strictly_and_samples_from_a_features_file(small, tmp_path):
    """A small t2i GPT (GPT-XL's depth, 120 caption positions of 2048-d FLAN-T5 features) and VQ-16 convert into
    one folder: each official tensor lands in its place, the caption MLP's biases are zero, and the model
    samples prompts whose features come from a file given after loading (none is needed to convert or load)."""
    from argen.errors import ArgenError

    sd = official_state_dict("llamagen-t2i-xl.tsv")
    torch.save({"model": sd, "steps": 10}, tmp_path / "t2i.pt")
    g = torch.Generator().manual_seed(0)  # a VQ that decodes to finite images (index-filled weights overflow)
    vq = {k: torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v
          for k, v in official_state_dict("llamagen-vq16.tsv").items()}
    torch.save({"model": vq}, tmp_path / "vq.pt")
    assert main(["convert", "--from", "llamagen", "--checkpoint", str(tmp_path / "t2i.pt"), "--vae",
                 str(tmp_path / "vq.pt"), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    record = read_record(tmp_path / "out")
    assert record.preset == "llamagen-t2i-xl" and record.meta["sampler"] == {"cfg": 6.5, "top_k": 1000}
    pipe = Pipeline.from_pretrained(tmp_path / "out")  # strict: every argen tensor filled, no official one left
    model = pipe.generator
    assert model.config.caption_mask and model.config.cls_token_num == 120 and model.config.text["path"] == ""
    ours = model.state_dict()
    for key, t in ours.items():
        want = torch.full_like(t, T2I_FRESH[key]) if key in T2I_FRESH else sd[T2I_NAMES.get(key, key)].to(t.dtype)
        assert torch.equal(t, want), key
    assert {T2I_NAMES.get(k, k) for k in ours if k not in T2I_FRESH} == set(sd)

    with pytest.raises(ArgenError, match="no caption features file.*use_file") as e, model.conditioned(["caption 0"]):
        pass
    assert "\n" not in str(e.value)
    captions = t2i_features(tmp_path / "t5.safetensors")
    model.text.encoder.use_file(tmp_path / "t5.safetensors")
    with torch.no_grad(), model.conditioned(captions) as ids:
        keep = model.condition(ids)[1]
    assert keep.sum(1).tolist() == [7, 37] and keep[:, -1].all()  # left-padded: the last position is real
    images = pipe(prompts=captions[1:], seed=0, top_k=1)  # the preset's guidance, s = 7.5
    assert images.shape == (1, 3, 256, 256) and torch.isfinite(images).all()


def test_text_to_image_converter_errors_are_one_line(small, tmp_path, capsys):
    out = str(tmp_path / "out")
    sd = official_state_dict("llamagen-t2i-xl.tsv")
    wrong = {("cls_embedding.cap_proj.fc3.weight" if k == "cls_embedding.cap_proj.fc2.weight" else k): v
             for k, v in sd.items()}
    torch.save({"model": wrong}, tmp_path / "wrong.pt")
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "wrong.pt"), "--out", out)
    assert "not filled: text.token_proj.2.weight" in err and "cls_embedding.cap_proj.fc3.weight" in err
    t5_large = dict(sd, **{"cls_embedding.cap_proj.fc1.weight": torch.zeros(32, 1024)})
    torch.save({"model": t5_large}, tmp_path / "t5-large.pt")
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "t5-large.pt"), "--out", out)
    assert "reading 1024-d captions; argen has the official T2I GPT-XL (2048-d FLAN-T5-XL captions)" in err
    b_size = {k: v for k, v in sd.items() if not k.startswith("layers.") or int(k.split(".")[1]) < 12}
    torch.save({"model": b_size}, tmp_path / "t2i-b.pt")
    err = _run(capsys, "--from", "llamagen", "--checkpoint", str(tmp_path / "t2i-b.pt"), "--out", out)
    assert "a text-to-image GPT with 12 layers" in err
    assert not (tmp_path / "out").exists()
