"""argen: autoregressive image generation under one API.

    import argen
    argen.list_presets()                              # names usable with build() and the CLI
    model = argen.build("var-digits", device="meta")  # any preset, without allocating memory
    tok = argen.load("argen-demo/tokenizer")          # any checkpoint folder
    pipe = argen.Pipeline.from_pretrained("argen-demo/generator")
    images = pipe(labels=[3, 1, 4], seed=0)           # (3, C, H, W) in [-1, 1]

The layers and who may import whom: docs/architecture.md.
"""

from __future__ import annotations

from argen.version import __version__


def build(preset: str, device: str = "cpu", **overrides):
    """Build the model of a named preset (random weights); ``overrides`` replace config fields."""
    from argen.models import build as _build

    return _build(preset, device, **overrides)


def load(path: str, device: str = "cpu"):
    """Load any argen checkpoint folder (config.json + model.safetensors), or hf://ORG/NAME from the Hub."""
    from argen.hub import local_dir
    from argen.models import load_model

    return load_model(local_dir(path), device)


def list_presets(kind: str | None = None) -> list[str]:
    from argen.models import list_presets as _list

    return _list(kind)


def __getattr__(name: str):
    # Lazy so that `import argen` stays fast for the CLI's --help.
    if name == "Pipeline":
        from argen.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'argen' has no attribute {name!r}")


__all__ = ["Pipeline", "__version__", "build", "list_presets", "load"]
