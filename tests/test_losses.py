"""Optional tokenizer losses: the adversarial term trains each player only through its own loss."""

import pytest
import torch
from safetensors.torch import save_file

from argen.errors import CheckpointError, ConfigError
from argen.tokenizers.losses import PatchDiscriminator, VGGPerceptual, adversarial_terms
from argen.tokenizers.vq import VQConfig, VQTokenizer

TINY = dict(image_channels=3, image_size=32, ch=8, ch_mult=(1, 2), z_channels=4, groups=4, codebook_size=16)


def test_adversarial_terms_route_gradients_to_their_own_player():
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, ndf=8)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    w = torch.zeros(2, 3, 32, 32, requires_grad=True)  # stands in for the decoder
    rec = torch.tanh(w + real)
    d_loss, g_loss = adversarial_terms(disc, real, rec)
    # generator term: no gradient into the discriminator, some into the decoder
    g_params = torch.autograd.grad(g_loss, list(disc.parameters()) + [w], allow_unused=True)
    assert all(g is None for g in g_params[:-1])
    assert g_params[-1].abs().sum() > 0
    # discriminator term: gradient into the discriminator only
    d_params = torch.autograd.grad(d_loss, list(disc.parameters()) + [w], allow_unused=True)
    assert d_params[-1] is None
    assert d_params[0].abs().sum() > 0


def test_adversarial_tokenizer_trains_disc_and_saves_it():
    torch.manual_seed(0)
    tok = VQTokenizer(VQConfig(**TINY, adv_weight=0.5, disc_ndf=8)).train()
    loss, m = tok.loss((torch.rand(4, 3, 32, 32) * 2 - 1, None))
    loss.backward()
    assert {"d_loss", "g_loss", "adv_w"} <= set(m)
    assert tok.losses.disc.main[0].weight.grad.abs().sum() > 0
    assert any(k.startswith("losses.disc.") for k in tok.state_dict())


def test_adversarial_term_waits_for_disc_start():
    tok = VQTokenizer(VQConfig(**TINY, adv_weight=0.5, disc_ndf=8, disc_start=10)).train()
    loss, m = tok.loss((torch.rand(2, 3, 32, 32) * 2 - 1, None))
    loss.backward()
    assert m["adv_w"] == 0.0
    assert tok.losses.disc.main[0].weight.grad is None or tok.losses.disc.main[0].weight.grad.abs().sum() == 0


def test_no_extra_losses_means_no_extra_weights():
    tok = VQTokenizer(VQConfig(**TINY))
    assert not any(k.startswith("losses.") for k in tok.state_dict())


def test_perceptual_loads_user_weights_and_is_zero_on_identical_images(tmp_path):
    torch.manual_seed(0)
    ref = VGGPerceptual()
    path = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in ref.features.state_dict().items()}, str(path))
    vgg = VGGPerceptual(str(path))
    assert torch.equal(vgg.features[0].weight, ref.features[0].weight)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(vgg(x, x)) == 0.0
    assert float(vgg(x, -x)) > 0.0
    assert not any(p.requires_grad for p in vgg.parameters())


def test_perceptual_needs_weights_and_rejects_wrong_files(tmp_path):
    with pytest.raises(ConfigError, match="perceptual_weights"):
        VQConfig(**TINY, perceptual_weight=1.0)
    bad = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(3)}, str(bad))
    with pytest.raises(CheckpointError, match="VGG16"):
        VGGPerceptual(str(bad))
