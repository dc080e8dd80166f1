"""Text conditioning through condition ids: a raster model learns two captions and samples them with
the unchanged samplers (classifier-free guidance included)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import patch

import pytest
import torch
from helpers import TINY_TEXT_GEN, tiny_maskgit_config, tiny_raster, tiny_raster_config
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

# shapes_raster (tests/conftest.py): raster-shapes, tiny, trained 3 steps on the shapes captions through the CLI
CPU = ["--threads", "1", "--quiet", "--device", "cpu"]


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
    code = main(["train", "generator", "--preset", "raster-shapes", "--data", "digits", "--scenes", "50", "--tokenizer",
                 str(tmp_path / "tok"), "--out", str(tmp_path / "gen"), "--steps", "1", *TINY_TEXT_GEN, *CPU])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--scenes: only the shapes data set" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "gen").exists()


def test_shapes_presets_know_every_word_of_the_shapes_captions():
    from argen.data import load_dataset
    from argen.presets.budgets import SHAPES_WORDS
    from argen.text import vocab_from_captions

    assert tuple(vocab_from_captions(load_dataset("shapes", "train").captions)) == SHAPES_WORDS


# ---- LlamaGen T2I caption masks (caption_mask) ---------------------------------------------------------

def masked_raster(caption_mask: bool = True, seed: int = 0, **overrides) -> RasterAR:
    """A tiny raster model on ``WordEncoder`` captions (3 positions, right-padded), random weights."""
    from helpers import randomize_raster

    def conditioner(text, width, positions=None):
        return TextConditioner(WordEncoder(), width)

    torch.manual_seed(seed)
    with patch("argen.generators.raster.text_conditioner", conditioner):
        model = RasterAR(tiny_raster_config(cls_token_num=3, text={}, num_classes=MAX_PROMPTS,
                                            caption_mask=caption_mask, **overrides))
    return randomize_raster(model, seed).eval()


def official_mask(keep_BT: torch.Tensor, L: int) -> torch.Tensor:
    """The attention mask LlamaGen's dataset/t2i.py and generate() build: causal, caption columns times the
    caption mask, then the diagonal set: (B, 1, L, L)."""
    T = keep_BT.shape[1]
    m = torch.tril(torch.ones(len(keep_BT), L, L))
    m[:, :, :T] = m[:, :, :T] * keep_BT[:, None, :].float()
    eye = torch.eye(L)
    return (m * (1 - eye) + eye).bool()[:, None]


PROMPTS2 = ["a red", "blue square circle", "a"]  # 2, 3 and 1 real tokens of 3


def test_caption_mask_left_pads_and_hides_padded_positions_as_llamagen():
    model = masked_raster()
    idx = torch.randint(0, 16, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), model.conditioned(PROMPTS2) as ids:
        cond, keep = model.condition(ids)
        assert keep.tolist() == [[False, True, True], [True, True, True], [False, False, True]]  # left-padded
        got = model(idx, ids)
        # the reference: the official mask over the left-aligned prefix, through the unmasked trunk
        x = torch.cat([cond, model.tok_embeddings(idx[:, :15])], 1)
        want = model.trunk(x, mask=official_mask(keep, x.shape[1]))[:, 2:]
        assert torch.allclose(got, want, atol=1e-5)
        # the caption's real tokens moved to the end, in order: "a red" sits where "blue square" would
        alone = model.text(ids).tokens_BLC
        assert torch.allclose(cond[0, 1:], alone[0, :2], atol=1e-6) and torch.allclose(cond[2, 2], alone[2, 0])
        # what the padding holds changes nothing
        model.text.encoder.emb.weight[0].normal_()
        assert torch.allclose(model(idx, ids), got, atol=1e-5)
    unmasked = masked_raster(caption_mask=False)
    with torch.no_grad(), unmasked.conditioned(PROMPTS2) as ids:
        assert unmasked.condition(ids)[1] is None
        assert not torch.allclose(unmasked(idx, ids)[0], got[0], atol=1e-3)  # the mask does change the output


def test_caption_mask_reaches_the_kv_cached_decode_and_masks_the_null_caption_as_its_twin():
    """Prefill + decode steps equal the teacher-forced forward on a guided batch [cond; uncond]: the mask
    of the prefix reaches every cached step, and a null row is masked as its conditional twin (LlamaGen's
    generate() gives the uncond half the cond half's emb_masks)."""
    model = masked_raster()
    c = model.config
    idx = torch.randint(0, 16, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), model.conditioned(PROMPTS2) as ids:
        labels = torch.cat([ids, torch.full_like(ids, MAX_PROMPTS)])
        keep = model.condition(labels)[1]
        assert torch.equal(keep[3:], keep[:3])  # the twins' masks
        assert model.condition(labels[3:])[1].all()  # a null row with no twin: the whole null caption
        x2 = torch.cat([idx, idx])
        full = model(x2, labels)
        caches = model.new_caches(6)
        steps = [model(x2[:, :0], labels, caches=caches)[:, -1]]
        for i in range(1, c.seq_len):
            steps.append(model.decode_step(x2[:, i - 1:i], torch.tensor([c.cls_token_num + i - 1]), caches)[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


def test_guided_and_speculative_sampling_of_a_caption_masked_model():
    """Greedy decoding with CFG: the KV-cached sampler equals an uncached argmax loop, and SJD (whose rows
    leave the caches as they finish) equals the sampler, token for token."""
    from argen.sampling import sampler_for
    from argen.sampling.guidance import guide

    model = masked_raster()
    with torch.no_grad(), model.conditioned(PROMPTS2) as ids:
        got = sample(model, None, ids, RasterSamplerConfig(cfg=1.5, top_k=1), torch.Generator())
        labels = torch.cat([ids, torch.full_like(ids, MAX_PROMPTS)])
        seq = torch.zeros(3, 0, dtype=torch.long)
        for _ in range(16):
            logits = guide(model(torch.cat([seq, seq]), labels)[:, -1], 1.5)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
        assert torch.equal(got.flatten(1), seq)
        sjd = sampler_for("raster", "sjd")
        assert torch.equal(sjd.sample(model, None, ids, sjd.config_class(cfg=1.5, top_k=1), torch.Generator()), got)


def test_dropped_captions_keep_their_mask_in_training():
    """LlamaGen's caption dropout swaps in uncond_embedding but keeps the caption's attention mask."""
    model = masked_raster(label_drop=0.5).train()
    with model.conditioned(PROMPTS2) as ids:
        null = torch.full_like(ids, MAX_PROMPTS)
        assert torch.equal(model.condition(null, mask_ids_B=ids)[1], model.condition(ids)[1])
        loss, _ = model.loss({"idx_BN": torch.zeros(3, 16, dtype=torch.long)}, ids)
    loss.backward()
    assert model.text.null_tokens_LD.grad is not None and torch.isfinite(loss)


def test_caption_mask_needs_a_text_model():
    from argen.errors import ConfigError

    with pytest.raises(ConfigError, match="caption_mask .* needs a text model") as e:
        tiny_raster_config(caption_mask=True)
    assert "\n" not in str(e.value)
