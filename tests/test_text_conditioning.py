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
    with model.conditioned(["a red circle", "a blue square"]) as ids:
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
    with pytest.raises(ArgenError, match="give prompts"), model.conditioned(torch.tensor([0])):
        pass
    with pytest.raises(ArgenError, match="needs its prompts"):
        model.text(torch.tensor([0]))
    with pytest.raises(ArgenError, match="class-conditional"), tiny_raster().conditioned(["a red circle"]):
        pass
    with model.conditioned(["a red circle"]), pytest.raises(ArgenError, match=r"in \[0, 1\)"):
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
        with model.conditioned([prompts[i] for i in batch]) as ids:
            loss, _ = model.loss({"idx_BN": maps[batch]}, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with model.conditioned(prompts) as ids:
        if family == "raster":
            config = RasterSamplerConfig(temperature=1.0, top_k=1, cfg=2.0)
            out = sample(model, None, ids, config, torch.Generator().manual_seed(0))
        else:
            config = MaskGITSamplerConfig(steps=4, temperature=1.0, top_k=1, cfg=2.0, choice_temperature=0.0)
            out = sample_maskgit(model, None, ids, config, torch.Generator().manual_seed(0))
    assert out.reshape(2, 4).tolist() == maps.tolist()


def text_var_or_mar(family: str, seed=0):
    """Tiny VAR / HMAR / MAR models conditioned on captions through ``WordEncoder``."""
    from helpers import TINY_VAR

    from argen.generators.hmar import HMAR, HMARConfig
    from argen.generators.mar import MAR, MARConfig
    from argen.generators.var import VAR, VARConfig

    def conditioner(text, width, positions=None, pooled=False):
        return TextConditioner(WordEncoder(), width, pooled)

    torch.manual_seed(seed)
    module = "var" if family in ("var", "hmar") else "mar"
    with patch(f"argen.generators.{module}.text_conditioner", conditioner):
        if family == "mar":
            return MAR(MARConfig(token_dim=3, grid=(4, 4), num_classes=MAX_PROMPTS, width=32, depth=1, heads=2,
                                 buffer_size=3, attn_dropout=0.0, proj_dropout=0.0, label_drop=0.0, head_width=32,
                                 head_depth=1, diffusion_train_steps=50, text={}))
        cls, cfg = (VAR, VARConfig) if family == "var" else (HMAR, HMARConfig)
        return cls(cfg(**{**TINY_VAR, "num_classes": MAX_PROMPTS, "text": {}}))


@pytest.mark.parametrize("family", ["var", "hmar", "mar"])
def test_captions_reach_the_output_and_train_the_encoder(family):
    """Other captions give other outputs, the null id gives the null caption's, and the loss trains the text
    encoder; the family's sampler runs on prompts with classifier-free guidance."""
    from helpers import random_images, tiny_kl, tiny_msvq

    model = text_var_or_mar(family).train()
    if family == "mar":  # move the head off its zero-initialised modulation, or nothing reaches the body yet
        with torch.no_grad():
            for p in model.diffloss.parameters():
                p.add_(0.05 * torch.randn_like(p))
    tok = tiny_kl() if family == "mar" else tiny_msvq()
    images = random_images(4)
    prompts = ["a red circle", "a blue square", "a red circle", "a blue"]
    tokens = model.tokens_from_images(tok, images)
    with model.conditioned(prompts) as ids:
        loss, _ = model.loss(tokens, ids)
    loss.backward()
    assert model.text.encoder.emb.weight.grad.abs().sum() > 0
    model.eval()
    # one image's tokens in every row: rows then differ by their captions only
    tokens = ({k: v[:1].expand_as(v) for k, v in tokens.items()} if isinstance(tokens, dict)
              else tokens[:1].expand_as(tokens))
    with torch.no_grad(), model.conditioned(prompts) as ids:
        if family == "mar":
            mask = torch.zeros(4, 16, dtype=torch.bool)
            mask[:, 8:] = True
            z = model(tokens, mask, ids)
            z_null = model(tokens, mask, torch.full_like(ids, MAX_PROMPTS))
        else:
            x = tokens["x_BLCv_wo_first_l"]
            z = model.trunk(model.teacher_inputs(model.cond_embed(ids), x), model.cond_embed(ids),
                            mask=model.attn_bias_for_masking[:, :, :model.config.seq_len, :model.config.seq_len])
            null = torch.full_like(ids, MAX_PROMPTS)
            z_null = model.trunk(model.teacher_inputs(model.cond_embed(null), x), model.cond_embed(null),
                                 mask=model.attn_bias_for_masking[:, :, :model.config.seq_len, :model.config.seq_len])
    assert (z[0] - z_null[0]).abs().max() > 1e-4  # a caption is not the null caption
    assert (z[3] - z[1]).abs().max() > 1e-4  # "a blue" is not "a blue square"
    assert (z[2] - z[0]).abs().max() < 1e-5  # the same caption, the same output
    from argen.sampling.base import sampler_for

    sampler = sampler_for(model.family)
    extra = {"head_steps": 3, "ar_steps": 4} if family == "mar" else {}
    with torch.no_grad(), model.conditioned(prompts[:2]) as ids:
        out = sampler.sample(model, tok, ids, sampler.config_class(cfg=1.5, **extra), torch.Generator().manual_seed(0))
    images_out = tok.decode(out)
    assert images_out.shape[0] == 2 and torch.isfinite(images_out).all()


# ---- end to end: train on shapes captions, sample from prompts ------------------------------------------

TINY_TEXT_TOK = ["--set", "ch=8", "--set", "z_channels=8", "--set", "groups=4", "--set", "codebook_size=16"]
TINY_TEXT_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]
CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def shapes_raster(tmp_path_factory):
    """raster-shapes, tiny, trained 3 steps on the shapes captions through the CLI."""
    from argen.cli import main

    root = tmp_path_factory.mktemp("t2i")
    assert main(["train", "tokenizer", "--preset", "vq-shapes", "--out", str(root / "tok"), "--steps", "2",
                 "--batch-size", "8", *TINY_TEXT_TOK, *CPU]) == 0
    assert main(["train", "generator", "--preset", "raster-shapes", "--tokenizer", str(root / "tok"),
                 "--out", str(root / "gen"), "--steps", "3", "--batch-size", "8", *TINY_TEXT_GEN, *CPU]) == 0
    return root


def test_text_model_trains_from_captions_and_samples_prompts(shapes_raster, capsys):
    import numpy as np

    from argen.cli import main
    from argen.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(shapes_raster / "gen")
    assert pipe.text_conditioned and pipe.generator.config.text["kind"] == "builtin"
    assert {"red", "circle", "above"} <= set(pipe.generator.config.text["vocab"])  # learned from the captions
    out = shapes_raster / "s"
    assert main(["sample", "--checkpoint", str(shapes_raster / "gen"), "--prompt", "a red circle", "--prompt",
                 "two blue squares", "--per-prompt", "2", "--out", str(out), *CPU]) == 0
    saved = np.load(str(out) + ".npz")
    assert saved["images"].shape == (4, 32, 32, 3) and saved["labels"].tolist() == [0, 0, 1, 1]
    assert saved["prompts"].tolist() == ["a red circle", "two blue squares"]
    # the CLI's images are the pipeline's
    images = pipe(prompts=["a red circle", "a red circle", "two blue squares", "two blue squares"], seed=0)
    assert np.array_equal(saved["images"], ((images + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "a lilac dragon"], "--prompt: unknown word(s) 'lilac', 'dragon'"),
    ([], "--prompt: this model is conditioned on text"),
    (["--labels", "0"], "--labels: this model is conditioned on text"),
])
def test_bad_prompts_are_one_line(shapes_raster, capsys, argv, message):
    from argen.cli import main

    code = main(["sample", "--checkpoint", str(shapes_raster / "gen"), "--out", str(shapes_raster / "x"), *argv, *CPU])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (shapes_raster / "x.npz").exists()


def test_text_preset_needs_captioned_data(tmp_path, capsys):
    from argen.cli import main

    assert main(["train", "tokenizer", "--preset", "vq-digits", "--out", str(tmp_path / "tok"), "--steps", "1",
                 "--batch-size", "8", *CPU]) == 0
    code = main(["train", "generator", "--preset", "raster-shapes", "--data", "digits", "--tokenizer",
                 str(tmp_path / "tok"), "--out", str(tmp_path / "gen"), "--steps", "1", *TINY_TEXT_GEN, *CPU])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no captions" in err and len(err.splitlines()) == 1


def test_shapes_presets_know_every_word_of_the_shapes_captions():
    from argen.data import load_dataset
    from argen.presets.budgets import SHAPES_WORDS
    from argen.text import vocab_from_captions

    assert tuple(vocab_from_captions(load_dataset("shapes", "train").captions)) == SHAPES_WORDS
