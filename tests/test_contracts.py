"""The contracts every generator family keeps, tested for each: a new family joins by adding one line to FAMILIES.

What is checked per family: declarations (family, tokens consumed, counted modules, default sampler,
config vocabulary), seed reproducibility, the checkpoint round trip, one-line errors for bad input,
editing that keeps the known tokens exactly, one error naming both sides for a mismatched
tokenizer (in Python and from `argen sample`), forward passes counted by hooks, and
`argen train generator --set depth=2 --set width=64` on a digits preset.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    random_images,
    tiny_hmar,
    tiny_kl,
    tiny_mar,
    tiny_maskgit,
    tiny_msvq,
    tiny_nar,
    tiny_raster,
    tiny_var,
    tiny_vq,
    tiny_xar,
)

from argen.checkpoint import TOKENIZER_DIR, read_record, save_model
from argen.cli import main
from argen.errors import ArgenError, ConfigError, TokenMismatchError
from argen.models import build, load_model
from argen.pipeline import Pipeline
from argen.registry import MODELS
from argen.sampling import sampler_for, samplers_of
from argen.tokens import TOKEN_KINDS, TokenSpec


@dataclass(frozen=True)
class Family:
    generator: Callable[[], torch.nn.Module]  # a tiny generator (random weights, eval mode)
    tokenizer: Callable[[], torch.nn.Module]  # a tiny tokenizer it fits
    sampler: dict                             # fast sampler settings for the tests
    cost: dict                                # counted module calls of one sampling call with those settings
    presets: tuple[str, str]                  # a digits generator preset and its tokenizer preset


FAMILIES = {
    "raster": Family(tiny_raster, tiny_vq, {"cfg": 1.0}, {"forward_calls": 16}, ("raster-digits", "vq-digits")),
    "nar": Family(tiny_nar, tiny_vq, {"cfg": 1.0}, {"forward_calls": 7}, ("nar-digits", "vq-digits")),
    "var": Family(tiny_var, tiny_msvq, {"cfg": 1.0}, {"forward_calls": 3}, ("var-digits", "msvq-digits")),
    "hmar": Family(tiny_hmar, tiny_msvq, {"cfg": 1.0, "refine_steps": 2}, {"forward_calls": 5},
                   ("hmar-digits", "msvq-digits")),
    "maskgit": Family(tiny_maskgit, tiny_vq, {"steps": 4, "cfg": 1.0}, {"forward_calls": 4},
                      ("maskgit-digits", "vq-digits")),
    "mar": Family(tiny_mar, tiny_kl, {"ar_steps": 4, "head_steps": 3, "cfg": 1.0},
                  {"forward_calls": 4, "head_calls": 12}, ("mar-flow-digits", "kl-digits")),
    "xar": Family(tiny_xar, tiny_kl, {"head_steps": 3, "cfg": 1.0}, {"forward_calls": 3, "head_calls": 9},
                  ("xar-digits", "kl-digits")),
}
NAMES = list(FAMILIES)
LABELS = [0, 1, 2]


def pipeline(name: str) -> Pipeline:
    f = FAMILIES[name]
    return Pipeline(f.tokenizer(), f.generator(), f.sampler)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name):
    f = FAMILIES[name]
    gen, tok = f.generator(), f.tokenizer()
    cls = type(gen)
    assert cls.family == name and cls.consumes in TOKEN_KINDS and MODELS.get(cls.__name__) is cls
    assert gen.token_spec == tok.token_spec and gen.token_spec.kind == cls.consumes
    # a config linked from the spec stands for the same spec (what `argen train generator` relies on)
    assert TokenSpec.of_config(cls.consumes, gen.config.replace(**tok.token_spec.link_fields())) == tok.token_spec
    assert set(gen.counted_modules()) == set(f.cost) and "forward_calls" in f.cost
    assert sampler_for(name).family == name
    # one vocabulary for what users set
    assert {"width", "depth", "heads", "label_drop"} <= set(gen.config.to_dict())


@pytest.mark.parametrize("family, sampler", [(f, s.name) for f in NAMES for s in samplers_of(f)])
def test_every_sampler_of_a_family_samples_its_models(family, sampler):
    """A sampler registered for a family works on that family's models: the token layout the tokenizer
    decodes, the same tokens for the same seed. Auxiliary models (CoDe's refiner) are the model itself."""
    f = FAMILIES[family]
    gen, tok = f.generator(), f.tokenizer()
    smp = sampler_for(family, sampler)
    config = smp.config_class.from_dict(f.sampler)
    aux = {name: gen for name in smp.models}
    if aux:
        config = config.replace(**{name: "the generator itself" for name in smp.models})
    labels = torch.tensor(LABELS)
    one = smp.sample(gen, tok, labels, config, torch.Generator().manual_seed(0), **aux)
    two = smp.sample(gen, tok, labels, config, torch.Generator().manual_seed(0), **aux)
    want = sampler_for(family).sample(gen, tok, labels, sampler_for(family).config_class.from_dict(f.sampler),
                                      torch.Generator().manual_seed(0))
    for a, b, w in zip(*(x if isinstance(x, list) else [x] for x in (one, two, want))):
        assert torch.equal(a, b) and a.shape == w.shape and a.dtype == w.dtype
    assert torch.isfinite(tok.decode(one)).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_images_different_seed_different(name):
    pipe = pipeline(name)
    a, b, c = (pipe(LABELS, seed=s) for s in (1, 1, 2))
    assert a.shape[0] == 3 and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_gives_the_same_weights_settings_and_images(name, tmp_path):
    pipe = pipeline(name)
    pipe.save_pretrained(tmp_path / "g", meta={"data": "digits"})
    back = Pipeline.from_pretrained(tmp_path / "g")
    a, b = pipe.generator.state_dict(), back.generator.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert back.settings == pipe.settings and back.record.cls == type(pipe.generator).__name__
    assert back.record.meta["data"] == "digits"
    assert torch.equal(back(LABELS, seed=3), pipe(LABELS, seed=3))


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_one_line_errors(name):
    pipe = pipeline(name)
    with pytest.raises(ArgenError) as e:
        pipe([0, 99])
    assert "99" in one_line(e)
    with pytest.raises(ConfigError) as e:
        pipe([0], no_such_knob=1)
    assert "no_such_knob" in one_line(e)
    with pytest.raises(ConfigError) as e:
        pipe([0], cfg=-1.0)
    assert "cfg" in one_line(e)


def _where_known(tokens, idx, known) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sampled, given, kept) flattened over every scale; continuous tokens keep their channels."""
    if isinstance(tokens, list):
        return (torch.cat([t.flatten() for t in tokens]), torch.cat([i.flatten() for i in idx]),
                torch.cat([k.flatten() for k in known]))
    if tokens.dtype.is_floating_point:  # (B, C, h, w): the mask (B, h, w) holds for every channel
        kept = known[:, None].expand_as(tokens)
        return tokens.flatten(), idx.flatten(), kept.flatten()
    return tokens.flatten(), idx.flatten(), known.flatten()


@pytest.mark.parametrize("name", NAMES)
def test_editing_keeps_the_known_tokens_exactly_and_redraws_the_rest(name):
    pipe = pipeline(name)
    assert pipe.generator.editing
    image = random_images(1, seed=4).expand(2, -1, -1, -1)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 4:, :] = 1  # regenerate the lower half
    idx, known = pipe.known_tokens(image, mask)
    tokens = pipe.sample_tokens([0, 1], seed=5, known=(idx, known))
    sampled, given, kept = _where_known(tokens, idx, known)
    assert kept.any() and (~kept).any()
    assert torch.equal(sampled[kept], given[kept])
    assert not torch.equal(sampled[~kept], given[~kept])
    assert pipe.edit(image[:1], mask[:1], [0, 1], seed=5).shape == (2, *image.shape[1:])


def _mismatched(name: str) -> list[torch.nn.Module]:
    """Tokenizers that do not fit ``name``'s generator: every other family's whose tokens differ, and one of
    the same kind with more codes (discrete) or channels (continuous)."""
    own = FAMILIES[name].tokenizer()
    others = [FAMILIES[n].tokenizer() for n in NAMES if n != name]
    bigger = {"embed_dim": 5} if own.token_spec.kind == "continuous" else {"codebook_size": 32}
    return [t for t in others if t.token_spec != own.token_spec] + [type(own)(own.config.replace(**bigger))]


@pytest.mark.parametrize("name", NAMES)
def test_a_mismatched_tokenizer_is_one_error_naming_both(name):
    f = FAMILIES[name]
    gen = f.generator()
    sampler = sampler_for(name)
    for tok in _mismatched(name):
        assert tok.token_spec != gen.token_spec
        with pytest.raises(TokenMismatchError) as e:
            Pipeline(tok, gen, f.sampler)
        msg = one_line(e)
        assert type(tok).__name__ in msg and type(gen).__name__ in msg
        with pytest.raises(TokenMismatchError) as e:  # the sampler alone says the same
            sampler.sample(gen, tok, torch.tensor([0]), sampler.config_class.from_dict(f.sampler))
        assert one_line(e) == msg


@pytest.mark.parametrize("name", NAMES)
def test_argen_sample_with_a_swapped_tokenizer_exits_2_naming_both(name, tmp_path, capsys):
    pipe = pipeline(name)
    pipe.save_pretrained(tmp_path / "g")
    other = _mismatched(name)[0]
    save_model(tmp_path / "g" / TOKENIZER_DIR, other)
    assert main(["sample", "--checkpoint", str(tmp_path / "g"), "--out", str(tmp_path / "s"), "--quiet",
                 "--device", "cpu", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and type(other).__name__ in err and type(pipe.generator).__name__ in err
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("name", NAMES)
def test_forward_passes_are_counted_by_hooks(name):
    pipe = pipeline(name)
    calls = dict.fromkeys(FAMILIES[name].cost, 0)
    handles = [module.register_forward_hook(lambda *a, k=key: calls.__setitem__(k, calls[k] + 1))
               for key, module in pipe.generator.counted_modules().items()]
    pipe(LABELS, seed=0)
    for h in handles:
        h.remove()
    assert calls == FAMILIES[name].cost
    # what the progress bar's total and time estimate rest on
    assert pipe.settings.passes(pipe.generator) == calls["forward_calls"]


@pytest.mark.parametrize("name", NAMES)
def test_progress_counts_steps_and_images(name, capsys, monkeypatch):
    """The bar ticks once per generator call (not per batch), ends at its total and names the images done."""
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "__init__", functools.partialmethod(tqdm.tqdm.__init__, mininterval=0))
    pipe = pipeline(name)
    pipe(LABELS, seed=0, batch_size=2, progress=True)
    err = capsys.readouterr().err
    steps = 2 * FAMILIES[name].cost["forward_calls"]  # two batches
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{steps}/{steps}" in last and "3/3 images" in last, last
    assert f"1/{steps}" in err  # it moved within the first batch


@pytest.mark.parametrize("name", NAMES)
def test_train_a_digits_preset_with_the_shared_vocabulary(name, tmp_path):
    preset, tok_preset = FAMILIES[name].presets
    save_model(tmp_path / "tok", build(tok_preset), preset=tok_preset)
    out = tmp_path / "gen"
    assert main(["train", "generator", "--preset", preset, "--tokenizer", str(tmp_path / "tok"), "--set", "depth=2",
                 "--set", "width=64", "--steps", "2", "--batch-size", "8", "--out", str(out), "--quiet",
                 "--device", "cpu", "--threads", "1"]) == 0
    config = read_record(out).config
    assert (config["depth"], config["width"]) == (2, 64)
    assert type(load_model(out)).family == name


def test_old_config_field_names_still_load():
    renamed = 0
    for cls in {type(f.generator()).config_class for f in FAMILIES.values()}:
        config = cls()
        for old, new in cls.RENAMED.items():
            d = config.to_dict()
            d[old] = d.pop(new)
            assert cls.from_dict(d) == config
            assert config.replace(**{old: d[old]}) == config
            renamed += 1
    assert renamed >= 4
