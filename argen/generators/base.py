"""What every generator declares: its family, the tokens it consumes, and its capabilities.

A generator is an ``nn.Module`` that maps (condition, tokens so far) to logits or hidden
states and knows nothing of sampling loops, tokenizers or files. Its class declares:

* ``family``: the name its samplers register under (``argen.registry.SAMPLERS``);
* ``consumes``: the kind of tokens it is built on (``argen.tokens.TOKEN_KINDS``); its
  ``token_spec`` follows from its config;
* ``likelihood``: whether ``loss`` returns an exact negative log-likelihood per token as
  ``metrics["ce"]`` (nats), which ``argen eval`` reports as bits per token;
* ``editing``: whether its sampler takes ``known`` tokens (``Pipeline.edit``);
* ``counted``: the submodules whose calls count as forward passes (``argen bench``):
  ``forward_calls`` is a module that runs once per network pass over the batch.

A text-conditioned generator has a ``text`` conditioner (``argen.generators.conditions``); its
condition ids stand for the prompts of the current call, entered with ``conditioned(prompts)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from argen.errors import ArgenError
from argen.nn import shard
from argen.tokens import TokenSpec


class Generator(nn.Module):
    family: ClassVar[str]
    consumes: ClassVar[str]
    config_class: ClassVar[type]
    likelihood: ClassVar[bool] = False
    editing: ClassVar[bool] = True
    counted: ClassVar[dict[str, str]] = {}

    @contextlib.contextmanager
    def conditioned(self, cond: torch.Tensor | Sequence[str]):
        """Condition ids for ``cond`` within this block: class ids (B,) as they are, or prompts (B strings)
        that a text model encodes once here, id i then standing for prompt i."""
        text = getattr(self, "text", None)  # a submodule: a class attribute would shadow it
        if isinstance(cond, torch.Tensor):
            if text is not None:
                raise ArgenError("this model is conditioned on text: give prompts, not class ids")
            yield cond
            return
        if text is None:
            raise ArgenError("this model is class-conditional: give class ids, not prompts")
        with text.captions(cond) as ids_B:
            yield ids_B

    @property
    def token_spec(self) -> TokenSpec:
        return TokenSpec.of_config(self.consumes, self.config)

    def counted_modules(self) -> dict[str, nn.Module]:
        """``counted`` resolved to submodules: {"forward_calls": module, ...}."""
        return {name: self.get_submodule(path) for name, path in self.counted.items()}

    def drop_labels(self, labels_B: torch.Tensor) -> torch.Tensor:
        """While training, each label becomes the null class (``num_classes``) with probability ``label_drop``:
        the unconditional model that classifier-free guidance needs, trained in the same network."""
        c = self.config
        if not self.training or c.label_drop <= 0:
            return labels_B
        drop_B = shard.rand(*labels_B.shape, device=labels_B.device) < c.label_drop
        return labels_B.masked_fill(drop_B, c.num_classes)
