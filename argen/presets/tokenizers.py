"""Tokenizer presets: the tiny ones argen trains on digits and Fashion-MNIST, and the official ImageNet
tokenizers that converted checkpoints load into (their codebooks are trained: no k-means, no restarts)."""

from __future__ import annotations

from argen.registry import preset
from argen.tokenizers.kl import KLConfig
from argen.tokenizers.msvq import MSVQConfig
from argen.tokenizers.vq import VQConfig


@preset("vq-digits", "tokenizer", data="digits",
        train=dict(steps=400, batch_size=128, lr=2e-3, warmup=50, ema=0.0),
        description="single-scale VQ for 8x8 digits: grid 4x4, 64 l2-normalised 8-d codes")
def vq_digits() -> VQConfig:
    return VQConfig(image_channels=1, image_size=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                    z_channels=16, groups=8, codebook_size=64, code_dim=8)


@preset("vq-fmnist", "tokenizer", data="fashion-mnist",
        train=dict(steps=2000, batch_size=64, lr=1e-3, warmup=100, ema=0.0),
        description="single-scale VQ for 28x28 Fashion-MNIST: grid 7x7, 256 l2-normalised 8-d codes")
def vq_fmnist() -> VQConfig:
    return VQConfig(image_channels=1, image_size=28, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                    z_channels=32, groups=16, codebook_size=256, code_dim=8)


# The official ImageNet tokenizer, for converted checkpoints (`argen convert --from llamagen --vae ...`).
# Its codebook is trained: no k-means initialisation, no dead-code restarts when fine-tuned.
@preset("llamagen-vq16", "tokenizer", data="imagenet",
        description="official LlamaGen VQ-16 (256 px -> 16x16, 16384 l2-normalised 8-d codes)")
def llamagen_vq16() -> VQConfig:
    return VQConfig(image_channels=3, image_size=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                    z_channels=256, groups=32, attn=True, codebook_size=16384, code_dim=8,
                    kmeans_init=False, restart_every=0)


@preset("msvq-digits", "tokenizer", data="digits",
        train=dict(steps=400, batch_size=128, lr=2e-3, warmup=50, ema=0.0),
        description="VAR multi-scale VQ for 8x8 digits: grid 4x4, scales 1-2-3-4, 64 codes")
def msvq_digits() -> MSVQConfig:
    return MSVQConfig(image_channels=1, image_size=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                      z_channels=16, groups=8, codebook_size=64, scales=(1, 2, 3, 4))


@preset("msvq-fmnist", "tokenizer", data="fashion-mnist",
        train=dict(steps=2000, batch_size=64, lr=1e-3, warmup=100, ema=0.0),
        description="VAR multi-scale VQ for 28x28 Fashion-MNIST: grid 7x7, scales 1-2-3-4-5-7, 256 codes")
def msvq_fmnist() -> MSVQConfig:
    return MSVQConfig(image_channels=1, image_size=28, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                      z_channels=32, groups=16, codebook_size=256, scales=(1, 2, 3, 4, 5, 7))


# The official ImageNet tokenizer, for converted checkpoints (`argen convert --from var --vae ...`).
# Its codebook is trained: no k-means initialisation, no dead-code restarts when fine-tuned.
@preset("var-vqvae", "tokenizer", data="imagenet",
        description="official VAR multi-scale VQVAE (256 px -> 16x16, scales 1..16, 4096 32-d codes)")
def var_vqvae() -> MSVQConfig:
    return MSVQConfig(image_channels=3, image_size=256, ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                      z_channels=32, groups=32, attn=True, codebook_size=4096,
                      scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), kmeans_init=False, restart_every=0)


@preset("kl-digits", "tokenizer", data="digits",
        train=dict(steps=400, batch_size=128, lr=2e-3, warmup=50, ema=0.0),
        description="KL autoencoder for 8x8 digits: grid 4x4 of 4-channel continuous tokens")
def kl_digits() -> KLConfig:
    return KLConfig(image_channels=1, image_size=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                    z_channels=16, groups=8, embed_dim=4)


@preset("kl-fmnist", "tokenizer", data="fashion-mnist",
        train=dict(steps=800, batch_size=64, lr=1e-3, warmup=100, ema=0.0),
        description="KL autoencoder for 28x28 Fashion-MNIST: grid 7x7 of 8-channel continuous tokens")
def kl_fmnist() -> KLConfig:
    return KLConfig(image_channels=1, image_size=28, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                    z_channels=32, groups=16, embed_dim=8)



# The official ImageNet tokenizer, for converted checkpoints (`argen convert --from mar --vae ...`).
@preset("mar-kl16", "tokenizer", data="imagenet",
        description="official MAR KL-16 autoencoder (256 px -> 16x16 tokens of 16 channels, scale 0.2325)")
def mar_kl16() -> KLConfig:
    return KLConfig(image_channels=3, image_size=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                    z_channels=16, groups=32, attn=True, decoder_level_attn=False, embed_dim=16,
                    scale_factor=0.2325)


# Text-to-image on the shapes scenes (32 px RGB): 8x8 token grids; pure colours and plain shapes need few codes.
_SHAPES_AE = dict(image_channels=3, image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=32, groups=16)


@preset("vq-shapes", "tokenizer", data="shapes", train=dict(steps=1000, batch_size=64, lr=1e-3, warmup=100, ema=0.0),
        description="single-scale VQ for 32 px shapes scenes: grid 8x8, 128 l2-normalised 8-d codes")
def vq_shapes() -> VQConfig:
    return VQConfig(**_SHAPES_AE, codebook_size=128, code_dim=8)


@preset("msvq-shapes", "tokenizer", data="shapes", train=dict(steps=1000, batch_size=64, lr=1e-3, warmup=100, ema=0.0),
        description="VAR multi-scale VQ for 32 px shapes scenes: grid 8x8, scales 1-2-3-4-6-8, 128 codes")
def msvq_shapes() -> MSVQConfig:
    return MSVQConfig(**_SHAPES_AE, codebook_size=128, scales=(1, 2, 3, 4, 6, 8))


@preset("kl-shapes", "tokenizer", data="shapes", train=dict(steps=600, batch_size=64, lr=1e-3, warmup=100, ema=0.0),
        description="KL autoencoder for 32 px shapes scenes: grid 8x8 of 4-channel continuous tokens")
def kl_shapes() -> KLConfig:
    return KLConfig(**_SHAPES_AE, embed_dim=4)
