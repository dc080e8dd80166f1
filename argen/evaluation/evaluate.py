"""``argen eval``: every applicable metric of a generator (or of a sample file) against real test images.

Sample metrics live in the feature space of the dataset's reference classifier (the CNN
shipped in ``argen/assets``) and are named for it: ``FD-fmnist``, never "FID". The real
test split is the reference set; ``real_floor`` gives the same metrics for real test
images against real train images, the floor every model is compared to.

    metrics = evaluate_checkpoint(Pipeline.from_pretrained("runs/var-fmnist"), n=1000, seed=0)
    metrics = evaluate_samples(images_u8, labels, "fashion-mnist")
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from argen.data import load_dataset
from argen.errors import ArgenError
from argen.evaluation.classifier import class_accuracy, load_reference_classifier
from argen.evaluation.metrics import features_of, frechet_distance_from_features, inception_score, kid, prdc, probs_of
from argen.sampling import is_lossy

SHORT = {"fashion-mnist": "fmnist", "digits": "digits"}
# precision / recall / density / coverage use k = 5 nearest neighbours: a set needs k + 1 samples
MIN_SAMPLES = 6


def short_name(dataset: str) -> str:
    return SHORT.get(dataset, dataset)


@functools.cache
def _real_features(dataset: str, split: str, device: str) -> torch.Tensor:
    clf = load_reference_classifier(dataset, device)
    return features_of(clf, load_dataset(dataset, split).images, device=device)


def _feature_metrics(fake_f: torch.Tensor, real_f: torch.Tensor, tag: str, seed: int) -> dict[str, float]:
    n = min(len(fake_f), len(real_f))
    kid_mean, kid_std = kid(fake_f, real_f, subsets=50, subset_size=min(1000, n), seed=seed)
    pr = prdc(real_f[torch.randperm(len(real_f), generator=torch.Generator().manual_seed(seed))[:max(n, 2)]], fake_f)
    return {f"FD-{tag}": frechet_distance_from_features(fake_f, real_f), f"KID-{tag}": kid_mean,
            f"KID-{tag}_std": kid_std, **{f"{k}-{tag}": v for k, v in pr.items()}}


def evaluate_samples(images_u8: np.ndarray, labels: np.ndarray | None, dataset: str, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """Metrics of samples (uint8 (N, H, W, C)) against the real test split of ``dataset``."""
    device = str(torch.device(device))
    tag = short_name(dataset)
    clf = load_reference_classifier(dataset, device)
    fake_f = features_of(clf, images_u8, device=device, progress=progress)
    out = _feature_metrics(fake_f, _real_features(dataset, "test", device), tag, seed)
    out[f"IS-{tag}"] = inception_score(probs_of(clf, images_u8, device=device))[0]
    if labels is not None:
        out.update(class_accuracy(images_u8, labels, dataset))
    out["n_samples"] = len(images_u8)
    return out


def real_floor(dataset: str, n: int | None = None, seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """The same metrics for ``n`` real train images against the test split: what a perfect model scores."""
    device = str(torch.device(device))
    train_f = _real_features(dataset, "train", device)
    if n is not None:
        train_f = train_f[torch.randperm(len(train_f), generator=torch.Generator().manual_seed(seed))[:n]]
    return _feature_metrics(train_f, _real_features(dataset, "test", device), short_name(dataset), seed)


def inception_fid(images_u8: np.ndarray, dataset: str, weights: str | Path | torch.nn.Module, seed: int = 0,
                  device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """The standard FID: Inception-v3 pool features of the samples against as many real test images
    (a seeded random subset), with the user's Inception weights file (or the network loaded from it).
    Expensive on a CPU (299 px)."""
    from argen.evaluation.inception import load_inception

    device = str(torch.device(device))
    net = weights if isinstance(weights, torch.nn.Module) else load_inception(weights, device)
    real = load_dataset(dataset, "test").images
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:len(images_u8)]
    # batch 50: a 299 px batch of 500 would need several GB of activations
    fake_f = features_of(net, images_u8, batch_size=50, device=device, progress=progress)
    real_f = features_of(net, real[pick.numpy()], batch_size=50, device=device, progress=progress)
    return {"FID": frechet_distance_from_features(fake_f, real_f), "FID_n_real": len(real_f)}


def bits_per_token(pipe, dataset: str, n: int = 1000, batch_size: int = 250) -> float | None:
    """Exact negative log-likelihood of ``n`` test images' token maps, in bits per token, for the generators
    that declare one (``Generator.likelihood``: raster, a product of next-token probabilities; VAR, over
    every scale's tokens). ``None`` for masked families, whose training objective is not a likelihood."""
    gen, tok = pipe.generator, pipe.tokenizer
    if not gen.likelihood:
        return None
    test = load_dataset(dataset, "test")
    n = min(n, len(test))
    total, count = 0.0, 0
    gen.eval()
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            images, labels = test.batch(torch.arange(i, min(i + batch_size, n)))
            tokens = gen.tokens_from_images(tok, images.to(pipe.device))
            _, metrics = gen.loss(tokens, labels.to(pipe.device))  # eval mode: no label dropout, mean CE in nats
            total += metrics["ce"] * len(labels)
            count += len(labels)
    return total / count / float(np.log(2))


def evaluate_checkpoint(pipe, n: int = 1000, seed: int = 0, device: str | torch.device = "cpu",
                        batch_size: int = 250, progress: bool = False, **sampler_overrides):
    """Sample ``n`` images (classes balanced, seeded) from a ``Pipeline`` loaded from a checkpoint folder and
    compute every metric; returns (metrics, images, labels)."""
    from argen.images import to_uint8

    dataset = pipe.record.meta.get("data") if pipe.record is not None else None
    if dataset not in SHORT:
        raise ArgenError(f"trained on {dataset!r}; argen eval has reference classifiers for {', '.join(SHORT)}")
    if n < MIN_SAMPLES:
        raise ArgenError(f"--n must be >= {MIN_SAMPLES} (what the metrics need), got {n}")
    labels = np.arange(n) % pipe.num_classes
    t0 = time.time()
    images = to_uint8(pipe(labels.tolist(), seed=seed, batch_size=batch_size, progress=progress,
                           **sampler_overrides))
    sample_s = time.time() - t0
    metrics = evaluate_samples(images, labels, dataset, seed=seed, device=device, progress=progress)
    bpt = bits_per_token(pipe, dataset)
    if bpt is not None:
        metrics["bits_per_token"] = bpt
    settings = pipe.settings.replace(**sampler_overrides)
    metrics.update(seconds_per_image=sample_s / n, dataset=dataset, family=pipe.generator.family,
                   sampler=settings.to_dict(), sampler_name=pipe.sampler.name, lossy=is_lossy(settings), seed=seed)
    return metrics, images, labels


def _nn_pairs(images_u8: np.ndarray, labels: np.ndarray | None, dataset: str, device: str, per_class: int = 2):
    """A few samples per class, their nearest training images in feature space, and the test-set median."""
    from argen.evaluation.report import nearest_neighbours

    pick = (np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
            if labels is not None else np.arange(min(len(images_u8), 20)))
    clf = load_reference_classifier(dataset, device)
    train_f = _real_features(dataset, "train", device)
    dist, idx = nearest_neighbours(features_of(clf, images_u8[pick], device=device), train_f)
    test_dist, _ = nearest_neighbours(_real_features(dataset, "test", device)[:1000], train_f)
    neighbours = load_dataset(dataset, "train").images[idx].permute(0, 2, 3, 1).numpy()  # uint8 NCHW -> NHWC
    return images_u8[pick], neighbours, dist.numpy(), float(test_dist.median())


def check_samples(images_u8: np.ndarray, labels: np.ndarray | None, dataset: str, name: str = "") -> None:
    """One-line errors for a samples file the metrics cannot judge: too few images, labels that are not
    one class id of ``dataset`` per image (a label 99 would score a silent 0 % accuracy)."""
    where = f"--samples {name}: " if name else "samples: "
    if len(images_u8) < MIN_SAMPLES:
        raise ArgenError(f"{where}{len(images_u8)} images; the metrics need at least {MIN_SAMPLES}")
    if labels is None:
        return
    num_classes = len(load_dataset(dataset, "test").classes)
    if labels.ndim != 1 or len(labels) != len(images_u8):
        raise ArgenError(f"{where}labels must be one class id per image: {len(images_u8)} images, labels of "
                         f"shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ArgenError(f"{where}labels must be integer class ids, got {labels.dtype}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise ArgenError(f"{where}label {bad[0]} is out of range; {dataset} has classes 0..{num_classes - 1}")


def run_eval(out: str | Path, *, checkpoint: str | Path | None = None, samples: str | Path | None = None,
             data: str | None = None, n: int = 1000, seed: int = 0, device: str | torch.device = "cpu",
             progress: bool = True, inception_weights: str | Path | None = None, pipe=None,
             **sampler_overrides) -> dict:
    """Evaluate a generator checkpoint (sampling ``n`` images) or a samples ``.npz``; write ``out/metrics.json``,
    ``out/report.html`` (and ``out/samples.npz`` when sampling). Returns the metrics. ``pipe``: the
    ``Pipeline`` of ``checkpoint`` when the caller has loaded it already (it is loaded once)."""
    import argen.checkpoint as ckpt
    from argen.evaluation.report import render_report
    from argen.images import write_files

    out = Path(out)
    device = str(torch.device(device))
    log_rows, title, sampled = None, "argen eval", False
    # every input is checked (and the Inception file loaded) before sampling; nothing is written until the end
    inception = None
    if inception_weights is not None:
        from argen.evaluation.inception import load_inception

        inception = load_inception(inception_weights, device)
    if checkpoint is not None:
        if pipe is None:
            from argen.pipeline import Pipeline

            pipe = Pipeline.from_pretrained(checkpoint, device)
        try:
            metrics, images, labels = evaluate_checkpoint(pipe, n=n, seed=seed, device=device, progress=progress,
                                                          **sampler_overrides)
        except ArgenError as e:
            raise type(e)(f"{checkpoint}: {e}") from None
        dataset, sampled = metrics["dataset"], True
        log = Path(checkpoint) / "log.jsonl"
        log_rows = ckpt.read_log(log) if log.is_file() else None
        title = f"argen eval: {pipe.record.preset or Path(checkpoint).name}"
    else:
        if data is None:
            raise ArgenError("--data: evaluating a samples file needs the dataset it imitates (digits, fashion-mnist)")
        try:
            with np.load(samples) as z:
                adm = "images" not in z and "arr_0" in z  # `argen sample --format adm`, or another suite's file
                images, labels = (z["arr_0"], z.get("arr_1")) if adm else (z["images"], z.get("labels"))
                made = json.loads(str(z["meta"])) if "meta" in z else None  # sampler, settings, lossy
        except (OSError, ValueError, KeyError) as e:
            raise ArgenError(f"--samples: cannot read images from {samples}: {e}") from None
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ArgenError(f"--samples: expected uint8 images (N, H, W, C) as `argen sample` writes, got "
                             f"{images.dtype} {images.shape}")
        if adm and images.shape[-1] == 3 and (images == images[..., :1]).all():
            images = images[..., :1]  # grey images repeated over RGB for the FID suites: one channel again
        check_samples(images, labels, data, samples)
        dataset = data
        metrics = evaluate_samples(images, labels, dataset, seed=seed, device=device, progress=progress)
        metrics["dataset"] = dataset
        if made is not None:
            metrics["samples_meta"] = made
        title = f"argen eval: {Path(samples).name}"
    metrics["floor"] = real_floor(dataset, n=len(images), seed=seed, device=device)
    if inception is not None:
        metrics.update(inception_fid(images, dataset, inception, seed=seed, device=device, progress=progress))
    classes = list(load_dataset(dataset, "test").classes)
    html = render_report(metrics, images, labels, classes, _nn_pairs(images, labels, dataset, device), log_rows, title)
    files = {out / "metrics.json": lambda f: f.write(ckpt.json_text(metrics).encode()),
             out / "report.html": lambda f: f.write(html.encode())}
    if sampled:
        files[out / "samples.npz"] = lambda f: np.savez_compressed(f, images=images, labels=labels.astype(np.int64))
    write_files(files)  # all three or none (a full disk keeps an earlier evaluation whole)
    return metrics
