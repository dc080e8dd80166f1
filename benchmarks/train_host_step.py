"""Host work per training step that a small model's GPU step waits on, old way beside new, in one run.

    python benchmarks/train_host_step.py [--batch-size 256] [--scenes 200000] [--repeats 50]

Two pieces of a step of a text model trained from codes, each timed against what it replaced:
- the data order (``batch_indices``): one permutation per epoch, cached, against a permutation drawn
  again every step (the cache cleared before each call);
- the caption ids (``BuiltinTextEncoder.token_ids``): one tensor built from padded lists, against a
  row written into a zeros tensor per caption (the code it replaced, kept here as the baseline).
"""

from __future__ import annotations

import argparse
import time

import torch

from argen.data.shapes import prompts
from argen.pipeline import Pipeline
from argen.training import trainer


def per_row_ids(encoder, captions: list[str]) -> torch.Tensor:
    """The replaced construction of ``token_ids``: one small tensor and one row write per caption."""
    words = encoder._check_words(captions, "prompt")
    L = min(encoder.max_tokens, max(len(w) for w in words))
    ids_BL = torch.zeros(len(words), L, dtype=torch.long)
    for i, ws in enumerate(words):
        ids_BL[i, : min(len(ws), L)] = torch.tensor([encoder.word_ids[w] for w in ws[:L]], dtype=torch.long)
    return ids_BL


def ms(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--scenes", type=int, default=200_000, help="examples per epoch")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)
    B, n = args.batch_size, args.scenes
    step = iter(range(10**9))

    def cached():
        trainer.batch_indices(next(step), B, n, 0)

    def uncached():
        trainer._epoch_order.cache_clear()
        trainer.batch_indices(next(step), B, n, 0)

    encoder = Pipeline.from_pretrained("shapes-maskgit").generator.text.encoder
    captions = [q.caption for q in prompts("test", B)]
    assert torch.equal(encoder.token_ids(captions)[0], per_row_ids(encoder, captions))
    rows = [("data order (batch_indices)", ms(uncached, args.repeats), ms(cached, args.repeats)),
            ("caption ids (token_ids)", ms(lambda: per_row_ids(encoder, captions), args.repeats),
             ms(lambda: encoder.token_ids(captions), args.repeats))]
    print(f"batch {B}, {n:,} examples per epoch, one thread, mean of {args.repeats}\n")
    print("| piece | before (ms) | now (ms) | saved (ms) |\n|---|---|---|---|")
    for name, old, new in rows:
        print(f"| {name} | {old:.2f} | {new:.2f} | {old - new:.2f} |")
    print(f"| both | {sum(r[1] for r in rows):.2f} | {sum(r[2] for r in rows):.2f} | "
          f"{sum(r[1] - r[2] for r in rows):.2f} |")


if __name__ == "__main__":
    main()
