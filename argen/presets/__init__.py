"""Every named preset: configs, training budgets and default sampler settings, apart from the architectures.

Importing this package registers every preset (``argen.registry.PRESETS``) and, through the
architecture modules the presets build, every model class (``argen.registry.MODELS``).
``argen.models`` imports it; nothing below the model layer does.
"""

from argen.presets import classifier, hmar, mar, maskgit, nar, raster, tokenizers, var, xar  # noqa: F401
