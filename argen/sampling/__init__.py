"""Samplers: one module per decoding algorithm, each a frozen config plus ``sample(...)``.

``SAMPLERS`` maps a generator family to its default sampler (module, config class, function);
modules are imported on first use so that ``import argen`` stays light.
"""

from __future__ import annotations

import importlib

from argen.errors import ConfigError

SAMPLERS: dict[str, tuple[str, str, str]] = {
    "var": ("argen.sampling.next_scale", "NextScaleConfig", "sample"),
    "raster": ("argen.sampling.autoregressive", "RasterSamplerConfig", "sample"),
    "maskgit": ("argen.sampling.masked", "MaskedSamplerConfig", "sample"),
    "mar": ("argen.sampling.masked", "ContinuousSamplerConfig", "sample_continuous"),
}


def sampler_for(family: str):
    """(config class, sample function) of a generator family's sampler."""
    if family not in SAMPLERS:
        raise ConfigError(f"no sampler for generator family {family!r}; known: {', '.join(SAMPLERS)}")
    module, config_name, function = SAMPLERS[family]
    mod = importlib.import_module(module)
    return getattr(mod, config_name), getattr(mod, function)
