"""The same code on an accelerator: ``pytest tests/test_device.py --device cuda`` (skipped on the CPU, where
the rest of the suite runs, and in CI, which has no GPU).

Each test holds the device to what the CPU tests hold the CPU to: every sampler of every family samples
the family's models there (same seed, same tokens), the forward passes counted are the CPU's, the static
KV cache gives the full forward's logits, tokenizers decode as on the CPU, each family's digits preset
trains and samples from the CLI (also under bf16 autocast), and every shipped model samples there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_kl, tiny_msvq, tiny_raster, tiny_vq
from test_contracts import FAMILIES, LABELS, NAMES
from test_raster import LABELS as RASTER_LABELS
from test_raster import cached_logits, random_idx

from argen.checkpoint import save_model
from argen.cli import main
from argen.models import build
from argen.pipeline import Pipeline
from argen.sampling import sampler_for, samplers_of

MODELS = sorted(p.name for p in (Path(__file__).parents[1] / "argen" / "assets" / "models").iterdir())


@pytest.fixture(scope="module")
def device(request) -> torch.device:
    name = request.config.getoption("--device")
    if name == "cpu":
        pytest.skip("accelerator tests: pytest tests/test_device.py --device cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"--device {name}: torch.cuda.is_available() is False")
    return torch.device(name)


def on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.to(device).eval()


@pytest.mark.parametrize("family, sampler", [(f, s.name) for f in NAMES for s in samplers_of(f)])
def test_every_sampler_of_a_family_samples_on_the_device(family, sampler, device):
    f = FAMILIES[family]
    gen, tok = on(f.generator(), device), on(f.tokenizer(), device)
    smp = sampler_for(family, sampler)
    config = smp.config_class.from_dict(f.sampler)
    aux = {name: gen for name in smp.models}
    if aux:
        config = config.replace(**{name: "the generator itself" for name in smp.models})
    labels = torch.tensor(LABELS, device=device)
    one, two = (smp.sample(gen, tok, labels, config, torch.Generator(device).manual_seed(0), **aux) for _ in range(2))
    for a, b in zip(*(x if isinstance(x, list) else [x] for x in (one, two))):
        assert a.device.type == device.type and torch.equal(a, b)
    images = tok.decode(one)
    assert images.device.type == device.type and torch.isfinite(images).all()


@pytest.mark.parametrize("name", NAMES)
def test_pipelines_sample_on_the_device_with_the_cpus_forward_passes(name, device):
    f = FAMILIES[name]
    pipe = Pipeline(on(f.tokenizer(), device), on(f.generator(), device), f.sampler)
    calls = dict.fromkeys(f.cost, 0)
    handles = [module.register_forward_hook(lambda *a, k=key: calls.__setitem__(k, calls[k] + 1))
               for key, module in pipe.generator.counted_modules().items()]
    a = pipe(LABELS, seed=1)
    for h in handles:
        h.remove()
    assert calls == f.cost
    b, c = pipe(LABELS, seed=1), pipe(LABELS, seed=2)
    # the pipeline hands its images back on the CPU, whatever device sampled them
    assert a.device.type == "cpu" and a.shape[0] == len(LABELS) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("cfg", [False, True])
def test_raster_static_kv_cache_gives_the_full_forwards_logits(cfg, device):
    model = on(tiny_raster(), device)
    idx, labels = random_idx(n=model.config.seq_len).to(device), RASTER_LABELS.to(device)
    if cfg:
        idx, labels = torch.cat([idx, idx]), torch.cat([labels, torch.full_like(labels, model.config.num_classes)])
    with torch.inference_mode():
        full = model(idx, labels)
        step = lambda x, pos, caches: model.decode_step(x, pos.to(device), caches)
        torch.testing.assert_close(cached_logits(model, idx, labels, step), full, atol=1e-4, rtol=0)
        torch.testing.assert_close(full.cpu(), on(model, torch.device("cpu"))(idx.cpu(), labels.cpu()),
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize("make", [tiny_vq, tiny_msvq, tiny_kl], ids=["vq", "msvq", "kl"])
def test_tokenizers_decode_on_the_device_as_on_the_cpu(make, device):
    tok = make()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        codes = tok.encode(x)
        want = tok.decode(codes)
        got = on(tok, device).decode([c.to(device) for c in codes] if isinstance(codes, list) else codes.to(device))
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_each_familys_digits_preset_trains_and_samples_from_the_cli(name, bf16, device, tmp_path):
    preset, tok_preset = FAMILIES[name].presets
    save_model(tmp_path / "tok", build(tok_preset), preset=tok_preset)
    dev = ["--device", str(device), "--quiet"]
    assert main(["train", "generator", "--preset", preset, "--tokenizer", str(tmp_path / "tok"), "--set", "depth=2",
                 "--set", "width=64", "--steps", "3", "--batch-size", "8", "--out", str(tmp_path / "gen"),
                 *(["--bf16"] if bf16 else []), *dev]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "gen"), "--labels", "0,1,2", "--out",
                 str(tmp_path / "s"), *dev]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert set(f["labels"].tolist()) == {0, 1, 2} and len(f["images"]) == len(f["labels"])


@pytest.mark.parametrize("name", MODELS)
def test_shipped_models_sample_on_the_device(name, device):
    pipe = Pipeline.from_pretrained(name, device=device)
    kw = {"prompts": ["a red circle", "two green triangles"]} if pipe.text_conditioned else {"labels": [0, 3]}
    images = pipe(seed=1, **kw)
    assert images.device.type == "cpu" and images.shape[0] == 2
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
