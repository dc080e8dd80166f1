"""Text conditioning through condition ids: a raster model learns two captions and samples them with
the unchanged samplers (classifier-free guidance included)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import patch

import pytest
import torch
from helpers import tiny_maskgit_config, tiny_raster, tiny_raster_config
from torch import nn

from argen.errors import ArgenError
from argen.generators.conditions import MAX_PROMPTS, TextConditioner
from argen.generators.maskgit import MaskGIT
from argen.generators.raster import RasterAR
from argen.sampling.autoregressive import RasterSamplerConfig, sample
from argen.sampling.maskgit import MaskGITSamplerConfig
from argen.sampling.maskgit import sample as sample_maskgit

WORDS = ["<pad>", "a", "red", "blue", "circle", "square"]


class WordEncoder(nn.Module):
    """A stand-in text encoder: one learned vector per word, 3 positions, mean pooling."""

    dim, max_tokens = 8, 3

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(len(WORDS), self.dim)

    def encode(self, prompts):
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)
        for i, p in enumerate(prompts):
            words = [WORDS.index(w) for w in p.split()][: self.max_tokens]
            ids[i, : len(words)] = torch.tensor(words)
        mask = ids > 0
        tokens = self.emb(ids)
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return SimpleNamespace(tokens_BLD=tokens, pooled_BD=pooled, mask_BL=mask)


def text_model(family: str, seed=0):
    """A tiny model of ``family`` conditioned on captions through ``WordEncoder``."""
    kw = dict(num_classes=MAX_PROMPTS, vocab_size=4, grid=(2, 2), label_drop=0.2)

    def conditioner(text, width, positions=None):  # conditions.text_conditioner with the stand-in encoder
        return TextConditioner(WordEncoder(), width)

    torch.manual_seed(seed)
    with patch(f"argen.generators.{family}.text_conditioner", conditioner):
        if family == "raster":
            return RasterAR(tiny_raster_config(cls_token_num=3, text={}, **kw))
        return MaskGIT(tiny_maskgit_config(text={}, **kw))


def text_raster(seed=0):
    return text_model("raster", seed)


def test_null_id_is_the_null_caption_and_ids_index_prompts():
    model = text_raster()
    with model.conditions(["a red circle", "a blue square"]) as ids:
        assert ids.tolist() == [0, 1]
        cap = model.text(torch.tensor([1, MAX_PROMPTS, 0]))
        alone = model.text(torch.tensor([0]))
    assert cap.tokens_BLC.shape == (3, 3, model.config.width)
    assert torch.allclose(cap.tokens_BLC[2], alone.tokens_BLC[0], atol=1e-6)
    null = model.text.token_proj(model.text.null_tokens_LD)
    assert torch.allclose(cap.tokens_BLC[1], null, atol=1e-6) and cap.mask_BL[1].all()
    assert not torch.allclose(cap.tokens_BLC[0], cap.tokens_BLC[2])


def test_wrong_kind_of_condition_is_one_line():
    model = text_raster()
    with pytest.raises(ArgenError, match="give prompts"), model.conditions(torch.tensor([0])):
        pass
    with pytest.raises(ArgenError, match="needs its prompts"):
        model.text(torch.tensor([0]))
    with pytest.raises(ArgenError, match="class-conditional"), tiny_raster().conditions(["a red circle"]):
        pass
    with model.conditions(["a red circle"]), pytest.raises(ArgenError, match=r"in \[0, 1\)"):
        model.text(torch.tensor([1]))


@pytest.mark.parametrize("family", ["raster", "maskgit"])
def test_learns_captions_and_samples_them_with_cfg(family):
    """Two captions, two token maps: after training through caption ids (with caption dropout), greedy
    sampling with classifier-free guidance draws each caption's map, through the family's unchanged sampler."""
    torch.manual_seed(0)
    model = text_model(family).train()
    prompts = ["a red circle", "a blue square"]
    maps = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(600):
        batch = torch.tensor([0, 1] * 8)
        with model.conditions([prompts[i] for i in batch]) as ids:
            loss, _ = model.loss({"idx_BN": maps[batch]}, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with model.conditions(prompts) as ids:
        if family == "raster":
            config = RasterSamplerConfig(temperature=1.0, top_k=1, cfg=2.0)
            out = sample(model, None, ids, config, torch.Generator().manual_seed(0))
        else:
            config = MaskGITSamplerConfig(steps=4, temperature=1.0, top_k=1, cfg=2.0, choice_temperature=0.0)
            out = sample_maskgit(model, None, ids, config, torch.Generator().manual_seed(0))
    assert out.reshape(2, 4).tolist() == maps.tolist()
