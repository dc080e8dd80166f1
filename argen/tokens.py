"""Token contracts: what a tokenizer produces and what a generator consumes, declared, not probed.

Every tokenizer exposes ``token_spec`` (what its ``encode`` gives and its ``decode`` takes);
every generator class declares the kind it ``consumes`` and derives its own ``token_spec``
from its config. A tokenizer fits a generator when the two specs are equal, and
``check_fit`` is the one place that says so, with the one error every family raises.
``TokenSpec.link_fields`` gives the config fields a generator takes from its tokenizer
when it is trained on it (``argen train generator --tokenizer T``).
"""

from __future__ import annotations

from dataclasses import dataclass

from argen.errors import TokenMismatchError

TOKEN_KINDS = ("discrete", "multiscale", "continuous")


@dataclass(frozen=True)
class TokenSpec:
    kind: str                          # one of TOKEN_KINDS
    grid: tuple[int, int]              # (h, w) of the (last scale's) token map
    vocab_size: int | None = None      # discrete, multiscale: number of codes
    token_dim: int | None = None       # continuous: channels per token; multiscale: code width (teacher forcing)
    scales: tuple[int, ...] = ()       # multiscale: side of each square token map, coarse to fine

    def __post_init__(self):
        if self.kind not in TOKEN_KINDS:
            raise ValueError(f"kind must be one of {TOKEN_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "grid", tuple(self.grid))
        object.__setattr__(self, "scales", tuple(self.scales))

    @classmethod
    def of_config(cls, kind: str, config) -> TokenSpec:
        """The spec a generator config of ``kind`` stands for (its fields named as in ``link_fields``)."""
        if kind == "discrete":
            return cls(kind, config.grid, vocab_size=config.vocab_size)
        if kind == "multiscale":
            side = config.scales[-1]
            return cls(kind, (side, side), vocab_size=config.vocab_size, token_dim=config.token_dim,
                       scales=config.scales)
        return cls(kind, config.grid, token_dim=config.token_dim)

    def link_fields(self) -> dict:
        """The generator config fields this spec sets: the inverse of ``of_config``."""
        if self.kind == "discrete":
            return {"vocab_size": self.vocab_size, "grid": self.grid}
        if self.kind == "multiscale":
            return {"vocab_size": self.vocab_size, "token_dim": self.token_dim, "scales": self.scales}
        return {"token_dim": self.token_dim, "grid": self.grid}

    def describe(self) -> str:
        h, w = self.grid
        if self.kind == "discrete":
            return f"discrete tokens, grid {h}x{w}, {self.vocab_size} codes"
        if self.kind == "multiscale":
            return (f"multi-scale tokens, scales {'-'.join(map(str, self.scales))}, {self.vocab_size} codes "
                    f"of width {self.token_dim}")
        return f"continuous tokens, grid {h}x{w}, {self.token_dim} channels"


def check_fit(tokenizer_spec: TokenSpec, generator_spec: TokenSpec, tokenizer: str = "tokenizer",
              generator: str = "generator") -> None:
    """Raise ``TokenMismatchError`` naming both sides unless the tokenizer gives what the generator takes."""
    if tokenizer_spec != generator_spec:
        raise TokenMismatchError(f"{tokenizer} ({tokenizer_spec.describe()}) does not fit {generator} "
                                 f"(which takes {generator_spec.describe()})")


def check_kind(tokenizer_spec: TokenSpec, consumes: str, tokenizer: str = "tokenizer",
               generator: str = "generator") -> None:
    """Before a generator is built on a tokenizer: the kinds must agree (the rest is linked from the spec)."""
    if tokenizer_spec.kind != consumes:
        raise TokenMismatchError(f"{tokenizer} ({tokenizer_spec.describe()}) does not fit {generator} "
                                 f"(which takes {consumes.replace('multiscale', 'multi-scale')} tokens)")
