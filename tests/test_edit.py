"""Editing: known tokens are kept exactly; the pixel mask maps onto every scale's token grid."""

import numpy as np
import pytest
import torch
from helpers import tiny_msvq, tiny_var
from PIL import Image

from argen.cli import main
from argen.errors import ArgenError
from argen.images import load_image, load_mask
from argen.pipeline import Pipeline
from argen.sampling.next_scale import VARSamplerConfig, sample


def test_var_sampler_keeps_known_tokens_at_every_scale():
    model, tok = tiny_var(), tiny_msvq()
    B = 6
    gt = [torch.randint(16, (B, pn, pn), generator=torch.Generator().manual_seed(pn)) for pn in tok.scales]
    known = [torch.rand(B, pn, pn, generator=torch.Generator().manual_seed(10 + pn)) < 0.5 for pn in tok.scales]
    out = sample(model, tok, torch.tensor([0, 1, 2, 0, 1, 2]), VARSamplerConfig(cfg=0.5), torch.Generator().manual_seed(0),
                 known=(gt, known))
    for o, g, k in zip(out, gt, known):
        assert torch.equal(o[k], g[k])
    free = sample(model, tok, torch.tensor([0, 1, 2, 0, 1, 2]), VARSamplerConfig(cfg=0.5), torch.Generator().manual_seed(0))
    assert any(not torch.equal(f[k], g[k]) for f, g, k in zip(free, gt, known))  # the forcing did something


def test_edit_maps_the_pixel_mask_to_each_scale_and_keeps_known_tokens():
    pipe = Pipeline(tiny_msvq(), tiny_var(), {})
    image = torch.rand(1, 1, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, :] = 1  # regenerate the bottom half
    out = pipe.edit(image, mask, [0, 1, 2, 1], seed=0)
    gt, known = pipe.known_tokens(image.expand(4, -1, -1, -1), mask.expand(4, -1, -1, -1))
    tokens = pipe.sample_tokens([0, 1, 2, 1], seed=0, known=(gt, known))  # what edit decoded
    assert torch.equal(pipe.tokenizer.decode(tokens), out)
    # scales (1, 2, 4): a token is known iff its cell lies wholly in the top half
    assert [k[0].tolist() for k in known] == [[[False]], [[True, True], [False, False]],
                                              [[True] * 4, [True] * 4, [False] * 4, [False] * 4]]
    image_tokens = pipe.tokenizer.encode_scales(image)
    for o, g, k, t in zip(tokens, gt, known, image_tokens):
        assert torch.equal(g[0], t[0]) and torch.equal(o[k], g[k])
    assert out.shape == (4, 1, 8, 8) and not torch.equal(out[0], out[1])


def test_keep_scales_all_reproduces_the_image_tokens():
    pipe = Pipeline(tiny_msvq(), tiny_var(), {})
    image = torch.rand(1, 1, 8, 8) * 2 - 1
    out = pipe.edit(image, torch.zeros(1, 1, 8, 8), [0, 1], keep_scales=len(pipe.tokenizer.scales))
    want = pipe.tokenizer.decode_scales(pipe.tokenizer.encode_scales(image))
    assert torch.allclose(out, want.expand(2, -1, -1, -1), atol=1e-5)
    with pytest.raises(ArgenError, match="keep-scales"):
        pipe.edit(image, torch.zeros(1, 1, 8, 8), [0], keep_scales=99)


def test_image_and_mask_files(tmp_path):
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "white.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "black.png")
    assert torch.allclose(load_image(tmp_path / "white.png", 1, (8, 8)), torch.ones(1, 1, 8, 8))
    assert load_image(tmp_path / "black.png", 3, (8, 8)).shape == (1, 3, 8, 8)
    assert load_mask(tmp_path / "white.png", (8, 8)).sum() == 64
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ArgenError, match="cannot read image"):
        load_image(tmp_path / "bad.png", 1, (8, 8))


def test_cli_edit_needs_a_mask_or_keep_scales(tmp_path, capsys):
    pipe = Pipeline(tiny_msvq(), tiny_var(), {})
    pipe.save_pretrained(tmp_path / "gen")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    base = ["edit", "--checkpoint", str(tmp_path / "gen"), "--image", str(tmp_path / "img.png"), "--label", "1",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "e.png")]
    assert main(base) == 2
    assert "--mask" in capsys.readouterr().err
    assert main([*base, "--keep-scales", "1", "--n", "2"]) == 0
    data = np.load(tmp_path / "e.npz")
    assert data["images"].shape == (2, 8, 8, 1) and data["labels"].tolist() == [1, 1]
    assert main([*base, "--keep-scales", "1", "--label", "7"]) == 2  # tiny model has 3 classes


def test_an_image_too_large_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    for side in (9000, 20000):  # past argen's bound only; past PIL's own bomb limit too
        bomb = tmp_path / f"bomb{side}.png"
        bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
        with pytest.raises(ArgenError, match="too large"):
            load_image(bomb, 1, (8, 8))
