"""xAR: entities (cells, scales) cut and put back, block-causal conditions, the KV-cached sampler against
teacher forcing, noisy context learning, and the pass counts."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import tiny_xar

import argen.sampling.xar as xar_sampling
from argen.errors import ConfigError
from argen.generators.xar import XARConfig, cell_order
from argen.sampling.xar import XARSamplerConfig, sample


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cells_list_the_grid_cell_by_cell():
    assert cell_order(4, 4, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    assert cell_order(2, 3, 1).tolist() == list(range(6))


@pytest.mark.parametrize("kw", [dict(unit="cell", cell=1), dict(unit="cell", cell=2), dict(unit="cell", cell=4),
                                dict(unit="scale", scales=(1, 2, 4)), dict(unit="scale", scales=(4,))])
def test_entities_cut_and_assemble(kw):
    model = tiny_xar(**kw)
    x = torch.randn(2, 3, 4, 4)
    ents = model.entities(x)
    assert [e.shape[1] for e in ents] == model.config.entity_sizes
    torch.testing.assert_close(model.assemble(ents), x)
    if kw["unit"] == "scale" and len(kw["scales"]) > 1:  # a coarse scale is the area mean
        torch.testing.assert_close(ents[0][:, 0], x.mean((2, 3)))


def test_an_entity_sees_only_the_entities_before_it():
    model = tiny_xar(unit="cell", cell=2)
    labels = torch.tensor([0, 1])
    x = torch.randn(2, 3, 4, 4)
    z = model(x, labels)
    y = x.clone()
    y[:, :, 2:, 2:] += 1.0  # the last cell only
    z2 = model(y, labels)
    torch.testing.assert_close(z2, z)  # nothing reads the last entity (it is no one's context)
    y = x.clone()
    y[:, :, :2, 2:] += 1.0  # cell 1: the context of cell 2
    z3 = model(y, labels)
    torch.testing.assert_close(z3[:, :8], z[:, :8])
    assert not torch.allclose(z3[:, 8:12], z[:, 8:12])


@pytest.mark.parametrize("kw", [dict(unit="scale", scales=(1, 2, 4)), dict(unit="cell", cell=2)])
@pytest.mark.parametrize("cfg", [0.0, 1.5])
def test_cached_sampling_conditions_equal_teacher_forcing(kw, cfg, monkeypatch):
    """The head is conditioned, entity by entity, on what the full teacher-forced forward gives for the
    drawn latent: the cache, the context placement and the positions agree."""
    model = tiny_xar(seed=1, **kw)
    labels = torch.tensor([0, 2])
    seen, drawn_tokens = [], []
    real = xar_sampling.sample_head

    def spy(head, cond_MD, **k):
        seen.append(cond_MD)
        drawn_tokens.append(real(head, cond_MD, **k))
        return drawn_tokens[-1]

    monkeypatch.setattr(xar_sampling, "sample_head", spy)
    x = sample(model, None, labels, XARSamplerConfig(head_steps=2, cfg=cfg), gen(0))
    drawn = [out.view(2, e - b, 3) for out, (b, e) in zip(drawn_tokens, model.config.begin_ends)]
    torch.testing.assert_close(model.assemble(drawn), x)
    for rows, cond_labels in ((slice(0, 2), labels), (slice(2, 4), torch.full_like(labels, 3))):
        if rows.start and not cfg:
            break
        z = model.conditions(drawn, cond_labels)
        for (b, e), cond in zip(model.config.begin_ends, seen):
            n = e - b
            torch.testing.assert_close(cond[rows.start * n:rows.stop * n], z[:, b:e].flatten(0, 1),
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps, end", [(3, 0), (4, 2)])
def test_passes_one_per_entity_and_the_head_steps(steps, end):
    model = tiny_xar()
    calls = {"body": 0, "head": 0}
    h1 = model.blocks[0].register_forward_hook(lambda *a: calls.__setitem__("body", calls["body"] + 1))
    h2 = model.head.net.register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    config = XARSamplerConfig(head_steps=steps, head_steps_end=end, cfg=1.0)
    sample(model, None, torch.tensor([0, 1]), config, gen(0))
    h1.remove(), h2.remove()
    assert calls["body"] == 3 == config.passes(model)
    assert calls["head"] == (3 * steps if end == 0 else 4 + 3 + 2)


def test_noisy_context_changes_the_context_only_in_training():
    model = tiny_xar(context_noise=0.5)
    x, labels = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    torch.manual_seed(0)
    noisy = model(x, labels, context_noise=0.5)
    clean = model(x, labels)
    torch.testing.assert_close(noisy[:, :1], clean[:, :1])  # entity 0 has no context
    assert not torch.allclose(noisy[:, 1:], clean[:, 1:])
    model.train()
    loss, metrics = model.loss(x, labels)
    assert loss.requires_grad and metrics["flow_mse"] > 0


def test_known_tokens_are_kept_per_entity():
    model = tiny_xar(seed=2)
    given = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :] = True  # the top half
    out = sample(model, None, torch.tensor([0, 1]), XARSamplerConfig(head_steps=2), gen(1), known=(given, mask))
    torch.testing.assert_close(out[:, :, :2], given[:, :, :2])
    assert not torch.allclose(out[:, :, 2:], given[:, :, 2:])


@pytest.mark.parametrize("kw, words", [
    (dict(unit="cell", cell=3), "cell 3 must divide the grid"),
    (dict(unit="scale", scales=(1, 2)), "scales must increase from >= 1 to the grid side 4"),
    (dict(unit="row"), "unit must be one of cell, scale"),
    (dict(context_noise=1.5), "context_noise must be in [0, 1]"),
])
def test_config_errors_are_one_line(kw, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        XARConfig(token_dim=3, grid=(4, 4), **{"unit": "scale", "scales": (1, 2, 4), **kw})
