"""Official checkpoints (VAR, MAR, LlamaGen) -> ordinary argen checkpoint folders.

    argen convert --from var --checkpoint var_d16.pth --vae vae_ch160v4096z32.pth --out var-d16

Each family module (``argen.convert.var``, ``.mar``, ``.llamagen``) describes its two official
files, the generator and the tokenizer, as ``Official`` specs and registers
``convert(checkpoint, vae, out, ema=True) -> dict`` in ``argen.registry.CONVERTERS``. The
shared pieces live in ``argen.convert.common``:

* ``read_official`` (``argen.torch_files``) reads a ``.pth`` with ``torch.load(weights_only=True)``;
  the only non-tensor classes it accepts are the ones a family names. Nothing is unpickled blindly.
* ``pick`` finds the state dict inside the container (EMA first where the file has one).
* ``Tensors`` hands out official tensors by name and remembers which were used, so a
  key map that forgets a tensor is an error, not a silently random weight.
* ``load_strict`` fills an argen model and names every missing, unexpected or misshapen tensor.

Every failure is a ``ConvertError``: one line, exit code 2 from the CLI.
"""

from __future__ import annotations

from collections.abc import Callable

from argen.convert import llamagen, mar, var  # noqa: F401  (each registers its converter)
from argen.convert.common import (  # noqa: F401  (the shared pieces, re-exported)
    CODEBOOK_BUFFERS,
    IDENTITY,
    Official,
    Tensors,
    convert_files,
    load_strict,
    pick,
    read_official,
    require,
)
from argen.errors import ConvertError
from argen.registry import CONVERTERS


def available_families() -> list[str]:
    """The official code bases argen converts from."""
    return CONVERTERS.names()


def converter(family: str) -> Callable[..., dict]:
    """``convert`` of the official code base ``family``."""
    if family not in CONVERTERS:
        raise ConvertError(f"--from must be one of {', '.join(available_families())}, got {family!r}")
    return CONVERTERS.get(family)
