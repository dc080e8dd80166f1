"""Speed and memory of sampling: images per second, forward passes per image, peak memory.

    rows = bench("runs/var-fmnist", batch_sizes=(1, 64))
    print(format_table(rows))

Per batch size: the median over ``repeats`` timed runs (after ``warmup`` untimed ones) of a
whole sampling call, tokenizer decode included, synchronised on CUDA. Forward passes are counted
with a hook on the generator's first transformer block over one call (``forward_calls``: a
KV-cached decode step, a VAR scale, a MaskGIT step, a MAR body pass; a CFG-doubled batch is one
call) and on the other modules a generator declares in ``counted`` (MAR: its head network, ``head_calls``). Every image of the batch rides in each
call, so these are also the passes per image. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during
the call; on CPU the growth of the process's resident set over its value before the call,
sampled every millisecond by a thread (a lower bound: allocations shorter than that are missed).
"""

from __future__ import annotations

import math
import statistics
import threading
import time

import torch

from argen.sampling import is_lossy

PAGE = 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _PeakRSS:
    """Peak resident-set growth, in bytes, of the process while the ``with`` block runs (Linux)."""

    def __enter__(self):
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.growth = self.peak - self.base


class _Counter:
    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    """Wall seconds of ``fn()``, with the device's queue drained before and after."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def bench(pipe_or_path, batch_sizes=(1, 64), repeats: int = 3, warmup: int = 1, seed: int = 0,
          device: str | torch.device = "cpu", **sampler_overrides) -> list[dict]:
    """One row per batch size: images/s, s/image, forward passes per sampling call, peak memory (MB)."""
    from argen.pipeline import Pipeline

    pipe = pipe_or_path if isinstance(pipe_or_path, Pipeline) else Pipeline.from_pretrained(pipe_or_path, device)
    device = pipe.device
    gen = pipe.generator
    preset = pipe.record.preset if pipe.record is not None else None
    params = sum(p.numel() for p in gen.parameters())
    rows = []
    for bs in batch_sizes:
        if pipe.text_conditioned:  # the same prompt for every image: speed does not depend on the words
            conditions = {"prompts": [gen.text.encoder.example] * bs}
        else:
            conditions = {"labels": [i % pipe.num_classes for i in range(bs)]}

        def run(conditions=conditions, bs=bs):
            return pipe(seed=seed, batch_size=bs, **conditions, **sampler_overrides)

        for _ in range(warmup):
            run()
        counters = {name: _Counter(module) for name, module in gen.counted_modules().items()}
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            with _PeakRSS() as rss:
                times = [_timed(run, device)]
        finally:
            for counter in counters.values():
                counter.handle.remove()
        peak = (torch.cuda.max_memory_allocated(device) - before) if device.type == "cuda" else rss.growth
        times += [_timed(run, device) for _ in range(repeats - 1)]
        t = statistics.median(times)
        settings = pipe.settings.replace(**sampler_overrides)
        row = {"family": gen.family, "preset": preset, "params": params, "batch_size": bs,
               "images_per_s": bs / t, "s_per_image": t / bs, **{k: c.calls for k, c in counters.items()},
               "peak_mem_mb": peak / 2**20, "device": str(device), "sampler": pipe.sampler.name,
               "lossy": is_lossy(settings), "settings": settings.to_dict()}
        if pipe.sampler.speculative:  # every row of the batch rides in each pass: the slowest row's count
            row["accepted_tokens_per_pass"] = math.prod(gen.token_spec.grid) / row["forward_calls"]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of ``bench`` rows."""
    lines = [("| family | preset | sampler | params | batch | img/s | s/img | fwd calls / sampling call | "
              "tokens / pass | head calls | peak MB |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tpp = f"{r['accepted_tokens_per_pass']:.2f}" if "accepted_tokens_per_pass" in r else "-"
        name = r["sampler"] + (" (lossy)" if r["lossy"] else "")
        lines.append(f"| {r['family']} | {r['preset'] or '-'} | {name} | {r['params'] / 1e6:.2f}M | "
                     f"{r['batch_size']} | {r['images_per_s']:.1f} | {r['s_per_image']:.4f} | {r['forward_calls']} | "
                     f"{tpp} | {r.get('head_calls', '-')} | {r['peak_mem_mb']:.1f} |")
    return "\n".join(lines)

