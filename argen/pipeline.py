"""Pipeline: tokenizer + generator + default sampler settings -> images.

    pipe = Pipeline.from_pretrained("argen-demo/generator")
    images = pipe(labels=[0, 1, 2], seed=0)          # (3, C, H, W) in [-1, 1]
    fast = Pipeline.from_pretrained("fmnist-raster", sampler="sjd")   # a named sampler of the family

A generator checkpoint folder holds its tokenizer in ``tokenizer/`` and its
default sampler settings in ``config.json`` (``meta.sampler``), so the folder
alone is enough to sample.

Seeding: a call samples its labels in batches of ``batch_size``, and batch b draws from its own
``torch.Generator`` seeded with ``batch_seed(seed, b)``. So image i depends on the seed, the batch
size and i only (its batch's labels aside), never on the batches sampled before it: any subset
of batches, in any order and on any number of processes (``sample_batches``), gives the same
images as one call.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

import argen.checkpoint as ckpt
from argen.card import write_card
from argen.errors import ArgenError
from argen.generators.base import Generator
from argen.models import load_checkpoint
from argen.sampling import sampler_for
from argen.tokenizers.base import Tokenizer
from argen.tokens import check_fit

PRECISIONS = ("fp32", "bf16")


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of a sampling call with ``seed``.

    Batch 0 takes ``seed`` itself, so a call of one batch (``sample_tokens``, ``edit``, any call of at
    most ``batch_size`` labels) draws exactly what it did when all batches shared one stream. Later
    batches take 63 bits of SHA-256 of (seed, index): ``seed + index`` would make batch 1 of seed 0
    batch 0 of seed 1, and neighbouring seeds would share images."""
    if index == 0:
        return seed
    digest = hashlib.sha256(f"argen sampling batch {seed} {index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # a non-negative signed 64-bit seed


def num_batches(n: int, batch_size: int) -> int:
    """How many batches a call with ``n`` labels samples: batch b holds labels b * batch_size onwards."""
    return -(-n // batch_size)


class Pipeline:
    """``precision="bf16"`` samples and decodes under bf16 autocast: matmuls and convs in bf16,
    sampling arithmetic (softmax, the diffusion chain) in fp32. About 2x faster where the hardware
    has bf16 units (GPUs; CPUs with AVX512-BF16 or AMX); outputs differ slightly from fp32."""

    def __init__(self, tokenizer: Tokenizer, generator: Generator, settings: dict[str, Any] | None = None,
                 precision: str = "fp32", record: ckpt.CheckpointRecord | None = None, sampler: str | None = None):
        """``settings``: the sampler's config fields (a checkpoint's ``meta.sampler``); ``sampler``: the
        name of one of the family's samplers (``argen.sampling.samplers_of``), default the family's own."""
        if precision not in PRECISIONS:
            raise ArgenError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        check_fit(tokenizer.token_spec, generator.token_spec, f"tokenizer {type(tokenizer).__name__}",
                  f"generator {type(generator).__name__}")
        self.tokenizer = tokenizer.eval()
        self.generator = generator.eval()
        self.sampler = sampler_for(generator.family, sampler)
        self.settings = self.sampler.config_class.from_dict(settings or {})
        self._models: dict[str, Generator] = {}  # auxiliary generators of the sampler, by checkpoint path
        self.precision = precision
        self.record = record  # the generator checkpoint's record, when loaded from a folder

    def _autocast(self):
        # fp32 enters no context at all: autocast(enabled=False) would switch off a caller's own autocast
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def num_classes(self) -> int:
        return self.generator.config.num_classes

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32",
                        sampler: str | None = None) -> Pipeline:
        """A generator checkpoint folder, the name of a model shipped with argen (``"fmnist-var"``), or
        a model on the Hugging Face Hub, ``"hf://ORG/NAME"`` or ``"hf://ORG/NAME@REVISION"`` (``argen.hub``).

        ``sampler``: one of the family's samplers by name (default: the one the checkpoint was saved
        with, else the family's own); it starts from the checkpoint's sampler settings."""
        from argen.hub import local_dir
        from argen.pretrained import list_models, model_path

        path = local_dir(path)
        if not path.exists() and str(path) in list_models():
            path = model_path(str(path))
        generator, record = load_checkpoint(path, device)
        if not isinstance(generator, Generator):
            what = "a tokenizer checkpoint" if isinstance(generator, Tokenizer) else f"a {record.cls}"
            raise ArgenError(f"{path} is {what} ({record.cls}); sampling needs a generator checkpoint")
        if not (path / ckpt.TOKENIZER_DIR).is_dir():
            raise ArgenError(f"generator checkpoint {path} has no {ckpt.TOKENIZER_DIR}/ folder")
        tokenizer, tok_record = load_checkpoint(path / ckpt.TOKENIZER_DIR, device)
        if not isinstance(tokenizer, Tokenizer):
            raise ArgenError(f"{path / ckpt.TOKENIZER_DIR} holds a {tok_record.cls}, not a tokenizer")
        try:
            return cls(tokenizer, generator, record.meta.get("sampler"), precision, record,
                       sampler or record.meta.get("sampler_name"))
        except ArgenError as e:
            raise type(e)(f"{path}: {e}") from None

    def save_pretrained(self, path: str | Path, tokenizer_dir: str | Path | None = None, meta: dict | None = None) -> None:
        path = Path(path)
        meta = dict(meta or {}, sampler=self.settings.to_dict())
        if self.sampler.name != sampler_for(self.generator.family).name:
            meta["sampler_name"] = self.sampler.name
        ckpt.save_model(path, self.generator, meta=meta)
        if tokenizer_dir is not None:
            ckpt.copy_tokenizer(tokenizer_dir, path)
        else:
            ckpt.save_model(path / ckpt.TOKENIZER_DIR, self.tokenizer)
        write_card(path)  # the folder is complete: its model card (and its tokenizer's)

    @property
    def text_conditioned(self) -> bool:
        """Whether the generator is conditioned on captions (prompts) rather than class ids."""
        return getattr(self.generator, "text", None) is not None

    def check_labels(self, labels: Sequence[int] | Sequence[str], name: str = "--labels") -> None:
        """Class ids: integers (1.7 is no class: int() would quietly make it 1), at least one, all in range;
        for a text model, prompts its text encoder can represent."""
        if self.text_conditioned:
            name = "--prompt" if name == "--labels" else name
            if len(labels) == 0 or not all(isinstance(x, str) and x.strip() for x in labels):
                raise ArgenError(f"{name}: this model is conditioned on text: give one or more non-empty prompts")
            check = getattr(self.generator.text.encoder, "check_prompts", None)
            if check is not None:
                check(list(labels), name)
            return
        if len(labels) == 0:
            raise ArgenError(f"{name}: give at least one class id")
        for x in labels:
            try:
                i = operator.index(x)  # ints, numpy and 0-d torch integers; not floats, strings or None
            except TypeError:
                raise ArgenError(f"{name}: class ids must be integers, got {x!r}") from None
            if not 0 <= i < self.num_classes:
                raise ArgenError(f"{name}: {i} is out of range; this model has classes 0..{self.num_classes - 1}")

    # no_grad, not inference_mode: only outside inference mode does autocast keep the bf16 copy of
    # each weight for the whole call (inside it, every matmul casts its weight again)
    @contextlib.contextmanager
    def _condition_ids(self, labels: Sequence[int] | Sequence[str]):
        """Condition ids of one batch: class ids as a tensor, or a text model's prompts, encoded for the block."""
        if self.text_conditioned:
            with self.generator.conditioned(list(labels)) as ids_B:
                yield ids_B
        else:
            yield torch.as_tensor(list(labels), dtype=torch.long, device=self.device)

    @torch.no_grad()
    def __call__(self, labels: Sequence[int] | None = None, seed: int = 0, batch_size: int = 256,
                 progress: bool = False, prompts: Sequence[str] | None = None, **sampler_overrides) -> torch.Tensor:
        """Sample one image per label (class id), or per prompt of a text model: (N, C, H, W) in [-1, 1], on the CPU.
        Same seed and batch size, same images; image i depends on them and on i only (module docstring)."""
        if (labels is None) == (prompts is None):
            raise ArgenError("give labels (class ids) or prompts (for a text model), not both or neither")
        conditions = labels if labels is not None else prompts
        return torch.cat(self.sample_batches(conditions, seed, batch_size, None, progress, **sampler_overrides))

    @torch.no_grad()
    def sample_batches(self, labels: Sequence[int], seed: int = 0, batch_size: int = 256,
                       batches: Iterable[int] | None = None, progress: bool = False,
                       **sampler_overrides) -> list[torch.Tensor]:
        """The images of some batches of ``self(labels, seed, batch_size)``: one (n_b, C, H, W) tensor per
        index in ``batches`` (default: every batch, ``range(num_batches(len(labels), batch_size))``).

        Each batch is sampled from its own seed (``batch_seed``), so ``torchrun`` ranks can take batches
        r, r + N, ... and together give exactly the images of one process."""
        self.check_labels(labels)
        try:
            ok = operator.index(batch_size) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise ArgenError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        total = num_batches(len(labels), batch_size)
        batches = range(total) if batches is None else list(batches)
        for b in batches:
            if not (isinstance(b, int) and not isinstance(b, bool) and 0 <= b < total):
                raise ArgenError(f"batches: {b!r} is not one of the {total} batches of {len(labels)} labels in "
                                 f"batches of {batch_size} (0..{total - 1})")
        config = self.settings.replace(**sampler_overrides)
        models = self._sampler_models(config)
        labels = list(labels)
        n_images = sum(len(labels[b * batch_size:(b + 1) * batch_size]) for b in batches)
        out = []
        with _Progress(self.generator, config.passes(self.generator), n_images, len(batches), progress) as bar:
            for b in batches:
                gen = torch.Generator(device=self.device).manual_seed(batch_seed(seed, b))
                with self._autocast(), self._condition_ids(labels[b * batch_size:(b + 1) * batch_size]) as ids_B:
                    tokens = self.sampler.sample(self.generator, self.tokenizer, ids_B, config, gen, **models)
                    out.append(self.tokenizer.decode(tokens).float().cpu())
                bar.batch_done(len(out[-1]))
        return out

    @torch.no_grad()
    def sample_tokens(self, labels: Sequence[int], seed: int = 0, known=None, **sampler_overrides):
        """One batch of tokens, as the family's sampler returns them (before ``tokenizer.decode``).

        ``known``: tokens to keep and where, as ``known_tokens`` gives them (editing)."""
        self.check_labels(labels)
        config = self.settings.replace(**sampler_overrides)
        models = self._sampler_models(config)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        with self._autocast(), self._condition_ids(labels) as ids_B:
            return self.sampler.sample(self.generator, self.tokenizer, ids_B, config, gen, known=known, **models)

    def _sampler_models(self, config) -> dict[str, Generator]:
        """The auxiliary generators ``config`` names (``Sampler.models``), each loaded once per path."""
        out = {}
        for name in self.sampler.models:
            path = getattr(config, name)
            if not path:
                continue
            if path not in self._models:
                model, record = load_checkpoint(path, self.device)
                if not isinstance(model, Generator):
                    raise ArgenError(f"--{name.replace('_', '-')} {path} holds a {record.cls}, not a generator")
                self._models[path] = model.eval()
            out[name] = self._models[path]
        return out

    @torch.no_grad()
    def known_tokens(self, image: torch.Tensor, mask: torch.Tensor, keep_scales: int | None = None):
        """The tokens of ``image`` (N, C, H, W) and where they are kept, for the sampler's ``known``.

        ``mask`` (N, 1, H, W): 1 = regenerate. A token is kept when its whole cell on the token grid
        lies outside the mask. Multi-scale tokens: one (idx, kept) pair of lists over the scales, or,
        with ``keep_scales=k``, the first k scales kept whole."""
        tok = self.tokenizer
        image, mask = image.to(self.device), mask.to(self.device)
        with self._autocast():
            if tok.token_spec.kind == "multiscale":
                idx = tok.encode_scales(image)
                if keep_scales is None:
                    return idx, [F.adaptive_max_pool2d(mask, pn)[:, 0] < 0.5 for pn in tok.scales]
                if not 0 <= keep_scales <= len(tok.scales):
                    raise ArgenError(f"--keep-scales must be in 0..{len(tok.scales)}, got {keep_scales}")
                return idx, [torch.full_like(i, si < keep_scales, dtype=torch.bool) for si, i in enumerate(idx)]
            if keep_scales is not None:
                raise ArgenError("--keep-scales applies to multi-scale (VAR) models only")
            # (N, h, w) ids, or (N, C, h, w) continuous tokens; kept where the pooled mask is 0
            return tok.encode(image), F.adaptive_max_pool2d(mask, tok.grid)[:, 0] < 0.5

    @torch.no_grad()
    def edit(self, image: torch.Tensor, mask: torch.Tensor, labels: Sequence[int], seed: int = 0,
             keep_scales: int | None = None, **sampler_overrides) -> torch.Tensor:
        """Regenerate the region ``mask`` of ``image`` under each class in ``labels``: (N, C, H, W).

        ``image``: (1, C, H, W) in [-1, 1]; ``mask``: (1, 1, H, W), 1 = regenerate, 0 = keep. A token
        is kept (exactly) when its whole cell on the token grid lies outside the mask; every family
        fills the rest its own way (raster: in raster order, attending to the known tokens; masked:
        starting from the known tokens; VAR: forcing the known tokens at every scale). For VAR,
        ``keep_scales=k`` instead keeps the image's first k scales whole and regenerates the finer ones.
        """
        if not self.generator.editing:
            raise ArgenError(f"{self.generator.family} models do not support editing")
        self.check_labels(labels)
        n = len(labels)
        known = self.known_tokens(image.expand(n, -1, -1, -1), mask.expand(n, -1, -1, -1), keep_scales)
        tokens = self.sample_tokens(labels, seed, known=known, **sampler_overrides)
        with self._autocast():
            return self.tokenizer.decode(tokens).float().cpu()


class _Progress:
    """A progress bar counted in generator calls (steps), with images done beside it.

    A batch of 256 images is one sampler call that can take minutes, so counting batches would
    show 0/1 until the end; a forward hook on the generator's first block ticks once per step
    instead, and the total (``passes`` per batch, from the sampler config) gives a time estimate.
    Speculative samplers take at most ``passes`` steps: the bar jumps ahead when a batch ends early."""

    def __init__(self, generator: Generator, passes: int | None, n_images: int, n_batches: int, enabled: bool):
        self.passes, self.n_images, self.done, self.batches = passes, n_images, 0, 0
        total = passes * n_batches if passes else None
        self.bar = tqdm(total=total, desc="sample", unit="step", disable=not enabled, dynamic_ncols=True)
        self.bar.set_postfix_str(f"0/{n_images} images", refresh=False)
        module = generator.counted_modules().get("forward_calls") if enabled else None
        self.handle = module.register_forward_hook(self._tick) if module is not None else None

    def _tick(self, *_):
        if self.passes is None or self.bar.n < self.passes * (self.batches + 1):
            self.bar.update(1)

    def batch_done(self, n: int) -> None:
        self.done, self.batches = self.done + n, self.batches + 1
        if self.passes:
            self.bar.n = self.passes * self.batches
        self.bar.set_postfix_str(f"{self.done}/{self.n_images} images")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.bar.close()
