"""Reference classifier presets: the judges of samples and the feature spaces of Frechet distances."""

from __future__ import annotations

from argen.evaluation.classifier import ClassifierConfig
from argen.registry import preset


@preset("classifier-fmnist", "classifier", data="fashion-mnist",
        train=dict(steps=3000, batch_size=128, lr=2e-3, warmup=100, weight_decay=0.05, ema=0.0, save_every=1000),
        description="reference CNN for 28x28 Fashion-MNIST: judge of samples, feature space of FD-FMNIST")
def classifier_fmnist() -> ClassifierConfig:
    return ClassifierConfig(image_channels=1, image_size=28, num_classes=10, widths=(32, 64, 96), convs_per_block=1,
                            hidden=128, dropout=0.1, shift=2, hflip=False)


# 1500 steps of 128 (133 epochs of the 1442 train digits), ~40 s of one CPU core; 100k parameters (400 KB), 99.4%.
@preset("classifier-digits", "classifier", data="digits",
        train=dict(steps=1500, batch_size=128, lr=2e-3, warmup=100, weight_decay=0.05, ema=0.0, save_every=1500),
        description="reference CNN for 8x8 digits: judge of samples, feature space of Frechet distances")
def classifier_digits() -> ClassifierConfig:
    # 8x8 digits: a 1-pixel shift is already an eighth of the image, and mirrored digits are other symbols
    return ClassifierConfig(image_channels=1, image_size=8, num_classes=10, widths=(32, 64), convs_per_block=2,
                            hidden=128, dropout=0.3, shift=1, hflip=False)


# The shapes scenes' feature space (FD-shapes beside ShapesEval for text models): trained to tell the six
# prompt categories apart, which needs counting objects, reading colours and seeing relations; pure
# colours on black make mirrored scenes other scenes ("left of"), so no flips.
@preset("classifier-shapes", "classifier", data="shapes",
        train=dict(steps=1500, batch_size=128, lr=2e-3, warmup=100, weight_decay=0.05, ema=0.0, save_every=500),
        description="reference CNN for 32 px shapes scenes (6 prompt categories): feature space of FD-shapes")
def classifier_shapes() -> ClassifierConfig:
    return ClassifierConfig(image_channels=3, image_size=32, num_classes=6, widths=(32, 64, 96), convs_per_block=1,
                            hidden=128, dropout=0.1, shift=2, hflip=False)
