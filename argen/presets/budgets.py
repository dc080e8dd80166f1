"""Training budgets shared by several presets."""

# One training budget for every Fashion-MNIST generator preset, so that the families compare on
# equal terms: 1500 steps of 64 images (1.6 epochs), about 20-30 min on one CPU core for ~1M-parameter models.
FMNIST_TRAIN = dict(steps=1500, batch_size=64, lr=1e-3, warmup=100, ema=0.995, weight_decay=0.05)
