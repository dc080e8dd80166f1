"""Training budgets shared by several presets."""

# One training budget for every Fashion-MNIST generator preset, so that the families compare on
# equal terms: 1500 steps of 64 images (1.6 epochs), about 20-30 min on one CPU core for ~1M-parameter models.
FMNIST_TRAIN = dict(steps=1500, batch_size=64, lr=1e-3, warmup=100, ema=0.995, weight_decay=0.05)

# One budget for every text-to-image preset on the shapes scenes (32 px RGB, captions of up to 11 words):
# 2000 steps of 64 scenes (6.4 epochs of the 20,000 training scenes), 30-40 min per family on one CPU core.
SHAPES_TRAIN = dict(steps=2000, batch_size=64, lr=1e-3, warmup=200, ema=0.995, weight_decay=0.05)

# The built-in caption encoder of the shapes presets: the 36 words of the shapes captions (a test keeps
# them equal to vocab_from_captions of the training split), 12 positions (the longest caption has 11 words).
SHAPES_WORDS = ("a", "above", "and", "at", "below", "big", "blue", "bottom", "circle", "circles", "cyan", "four",
                "green", "left", "magenta", "of", "on", "one", "over", "red", "right", "single", "small", "square",
                "squares", "the", "three", "to", "top", "triangle", "triangles", "two", "under", "white", "with",
                "yellow")
SHAPES_TEXT = {"kind": "builtin", "vocab": SHAPES_WORDS, "max_tokens": 12, "width": 128, "depth": 2, "heads": 4}
