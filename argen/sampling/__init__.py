"""The sampling layer: one file per sampler, each a frozen config plus ``sample(...)``, registered by name.

Importing this package registers every sampler in ``argen.registry.SAMPLERS``; ``sampler_for``
gives a family's default (or a named) sampler. The shared pieces: ``guidance`` (CFG batch
doubling, mixing and weight schedules), ``processors`` (temperature, top-k, top-p, the
categorical draw), ``base`` (the registry entry, the discrete-sampler knobs, input checks)
and ``head`` (MAR's per-token head sampling).
"""

import argen.sampling.collaborative  # noqa: F401  (CoDe for VAR; it imports next_scale, VAR's default, first)
from argen.sampling import autoregressive, hmar, mar, maskgit, nar, next_scale, speculative, xar, zipar  # noqa: F401  (each registers)
from argen.sampling.base import Sampler, is_lossy, knob_catalog, knobs, register_sampler, sampler_for, samplers_of  # noqa: F401
