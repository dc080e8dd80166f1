"""``argen eval``: every applicable metric of a generator (or of a sample file) against real test images.

Sample metrics live in the feature space of the dataset's reference classifier (the CNN
shipped in ``argen/assets``) and are named for it: ``FD-fmnist``, never "FID". The real
test split is the reference set; ``real_floor`` gives the same metrics for real test
images against real train images, the floor every model is compared to.

Models with no such classifier (a converted official checkpoint, a model trained on a folder)
are compared with reference images the user supplies (``--reference``: a folder of images or
an ADM reference-batch ``.npz``) in the feature space of the standard Inception-v3, from the
user's weights file: FID, IS, KID and precision / recall (``reference_metrics``).

    metrics = evaluate_checkpoint(Pipeline.from_pretrained("runs/var-fmnist"), n=1000, seed=0)
    metrics = evaluate_samples(images_u8, labels, "fashion-mnist")
    metrics = reference_metrics(images_u8, load_reference("VIRTUAL_imagenet256_labeled.npz"), *load_scorer(w))
"""

from __future__ import annotations

import functools
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from argen.data import load_dataset
from argen.errors import ArgenError
from argen.evaluation.classifier import class_accuracy, load_reference_classifier
from argen.evaluation.metrics import features_of, frechet_distance_from_features, inception_score, kid, prdc, probs_of
from argen.sampling import is_lossy

SHORT = {"fashion-mnist": "fmnist", "digits": "digits", "shapes": "shapes"}
# precision / recall / density / coverage use k = 5 nearest neighbours: a set needs k + 1 samples
MIN_SAMPLES = 6
# Inception-space precision / recall use k = 3 and the Inception Score splits of 5,000 images, as the
# ADM evaluation suite (guided-diffusion's evaluator) does, so that the numbers compare with papers'
REFERENCE_K = 3
IS_SPLIT_SIZE = 5000
# ShapesEval of a text model samples at most this many prompts of each split (the test and held-out splits' size)
SHAPES_EVAL_MAX = 1000
REFERENCE_LAYOUT = "a folder of images, or an .npz with arr_0 uint8 (N, H, W, C) as the ADM reference batches"


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


def sample_feature_metrics(images_u8: np.ndarray, dataset: str, seed: int = 0, device: str | torch.device = "cpu",
                           progress: bool = False) -> dict[str, float]:
    """FD, KID and precision / recall / density / coverage of samples against the real test split, in the
    feature space of ``dataset``'s reference classifier."""
    device = str(torch.device(device))
    fake_f = features_of(load_reference_classifier(dataset, device), images_u8, device=device, progress=progress)
    return _feature_metrics(fake_f, _real_features(dataset, "test", device), short_name(dataset), seed)


def evaluate_samples(images_u8: np.ndarray, labels: np.ndarray | None, dataset: str, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """Metrics of samples (uint8 (N, H, W, C)) against the real test split of ``dataset``."""
    out = sample_feature_metrics(images_u8, dataset, seed, device, progress)
    clf = load_reference_classifier(dataset, str(torch.device(device)))
    out[f"IS-{short_name(dataset)}"] = inception_score(probs_of(clf, images_u8, device=device))[0]
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


# ---- against reference images the user supplies --------------------------------------------------------

def load_reference(path: str | Path, size: tuple[int, int] | None = None, progress: bool = False) -> np.ndarray:
    """The reference images of ``path`` as uint8 (N, H, W, C), C = 1 or 3.

    ``path``: an ``.npz`` with ``arr_0`` uint8 (N, H, W, C) (the ADM reference batches; ``images``, as
    ``argen sample`` writes, is read too), or a folder whose image files (any PIL reads; sub-folders
    included, hidden files skipped) are read as RGB. Folder images of another size than ``size`` (H, W)
    are centre-cropped to its aspect ratio and resized (bicubic), as reference batches are made; the
    first image's size is used without ``size``. One-line ``ArgenError``s for a missing, empty or odd
    ``path``."""
    from PIL import Image, ImageOps
    from tqdm import tqdm

    from argen.images import open_image

    path = Path(path)
    where = f"--reference {path}"
    if path.is_dir():
        suffixes = {k.lower() for k, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}  # not .pdf
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not files:
            raise ArgenError(f"{where}: no image files in the folder or its sub-folders ({REFERENCE_LAYOUT})")
        images = []
        for f in tqdm(files, desc="reference", disable=not progress, leave=False):
            try:
                with open_image(f) as im:
                    rgb = im.convert("RGB")
            except ArgenError as e:
                raise ArgenError(f"--reference: {e}") from None
            except (OSError, ValueError) as e:  # a truncated file fails only when its pixels are decoded
                raise ArgenError(f"--reference: cannot read image {f}: {e}") from None
            size = size or (rgb.height, rgb.width)
            if (rgb.height, rgb.width) != tuple(size):
                rgb = ImageOps.fit(rgb, (size[1], size[0]), method=Image.Resampling.BICUBIC)
            images.append(np.asarray(rgb, dtype=np.uint8))
        out = np.stack(images)
    elif path.is_file():
        if path.suffix.lower() != ".npz":
            raise ArgenError(f"{where}: not {REFERENCE_LAYOUT}")
        try:
            with np.load(path) as z:
                key = "arr_0" if "arr_0" in z else "images" if "images" in z else None
                if key is None:
                    raise ArgenError(f"{where}: no arr_0 array ({REFERENCE_LAYOUT}); it holds "
                                     f"{', '.join(z.files) or 'nothing'}")
                out = z[key]
        except ArgenError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ArgenError(f"{where}: cannot read it as an .npz ({type(e).__name__}: {e})") from None
        if out.dtype != np.uint8 or out.ndim != 4 or out.shape[-1] not in (1, 3):
            raise ArgenError(f"{where}: {key} must be uint8 (N, H, W, C) with C = 1 or 3, got {out.dtype} "
                             f"{tuple(out.shape)}")
    else:
        raise ArgenError(f"{where}: no such file or folder")
    if len(out) < MIN_SAMPLES:
        raise ArgenError(f"{where}: {len(out)} images; the metrics need at least {MIN_SAMPLES}")
    return out


def load_scorer(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, torch.Tensor | None]:
    """The Inception-v3 of a weights file and its classifier weight for the Inception Score: ``fc.weight``
    (1008, 2048) of the TF graph's 1008-way softmax, used without its bias as the ADM suite and
    torch-fidelity do; ``None`` when the file has no ``fc``."""
    from argen.evaluation.inception import load_inception
    from argen.torch_files import pick, read_official

    net = load_inception(path, device)  # checks the file, in one line
    sd, _ = pick(read_official(path), path, ("", "state_dict", "model"))  # again, for the fc the net drops
    w = sd.get("fc.weight")
    return net, (w.detach().to("cpu", torch.float64) if isinstance(w, torch.Tensor) and w.dim() == 2 else None)


def reference_metrics(images_u8: np.ndarray, reference_u8: np.ndarray, net: torch.nn.Module,
                      logit_weight: torch.Tensor | None = None, seed: int = 0, device: str | torch.device = "cpu",
                      progress: bool = False) -> dict[str, float]:
    """Samples against reference images in the Inception network's pool features: ``FID``, ``KID``,
    ``precision`` / ``recall`` / ``density`` / ``coverage`` (k = 3) and, with ``logit_weight``, the
    Inception Score ``IS`` (mean and std over consecutive splits of 5,000 samples). uint8 (N, H, W, C) images."""
    device = str(torch.device(device))
    # batch 50: a 299 px batch of 500 would need several GB of activations
    fake_f = features_of(net, images_u8, batch_size=50, device=device, progress=progress)
    real_f = features_of(net, reference_u8, batch_size=50, device=device, progress=progress)
    kid_mean, kid_std = kid(fake_f, real_f, subsets=50, subset_size=min(1000, len(fake_f), len(real_f)), seed=seed)
    out = {"FID": frechet_distance_from_features(fake_f, real_f), "KID": kid_mean, "KID_std": kid_std,
           **prdc(real_f, fake_f, k=REFERENCE_K)}
    if logit_weight is not None and logit_weight.shape[1] == fake_f.shape[1]:
        probs = (fake_f.double() @ logit_weight.double().T).softmax(-1)
        # consecutive splits of 5,000 (the last one shorter), each scored alone, as the ADM suite does
        scores = torch.tensor([inception_score(probs[i:i + IS_SPLIT_SIZE])[0]
                               for i in range(0, len(probs), IS_SPLIT_SIZE)], dtype=torch.float64)
        out["IS"], out["IS_std"] = float(scores.mean()), float(scores.std(unbiased=False))
    out.update(n_samples=len(images_u8), n_reference=len(reference_u8))
    return out


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


def sample_checkpoint(pipe, n: int = 1000, seed: int = 0, batch_size: int = 250, progress: bool = False,
                      **sampler_overrides) -> tuple[np.ndarray, np.ndarray, dict]:
    """``n`` images of a ``Pipeline``, classes balanced (label i % num_classes) and seeded: uint8 (N, H, W, C),
    their labels, and how they were made (sampler, settings, seed, seconds per image)."""
    from argen.images import to_uint8

    if n < MIN_SAMPLES:
        raise ArgenError(f"--n must be >= {MIN_SAMPLES} (what the metrics need), got {n}")
    labels = np.arange(n) % pipe.num_classes
    t0 = time.time()
    images = to_uint8(pipe(labels.tolist(), seed=seed, batch_size=batch_size, progress=progress,
                           **sampler_overrides))
    settings = pipe.settings.replace(**sampler_overrides)
    made = dict(seconds_per_image=(time.time() - t0) / n, family=pipe.generator.family, sampler=settings.to_dict(),
                sampler_name=pipe.sampler.name, lossy=is_lossy(settings), seed=seed)
    return images, labels, made


def shapes_metrics(images_u8: np.ndarray, specs, tag: str = "") -> dict[str, float]:
    """ShapesEval accuracies of images against their prompts (``Prompt``s or captions), flat:
    ``shapes_eval[_tag]_overall`` and ``shapes_eval[_tag]_<category>`` for each category present."""
    from argen.evaluation.shapes_eval import score

    prefix = f"shapes_eval_{tag}_" if tag else "shapes_eval_"
    result = score(images_u8, specs)
    return {prefix + k: v for k, v in result.items() if isinstance(v, float)}


def shapes_eval_checkpoint(pipe, n: int = 500, seed: int = 0, batch_size: int = 250, progress: bool = False,
                           splits: tuple[str, ...] = ("test", "heldout"), **sampler_overrides) -> tuple[dict, np.ndarray, list[str]]:
    """ShapesEval of a text model: one image for each of the first ``n`` prompts of every split in ``splits``
    (``test``: compositions training captions name; ``heldout``: compositions they never name), sampled with
    ``seed``. Returns ``({"shapes_eval_overall": ..., "shapes_eval_<category>": ...,
    "shapes_eval_heldout_overall": ..., ...made}, images uint8 (N, H, W, C), the N captions)``; each
    split's images are those of one ``pipe`` call."""
    from argen.data.shapes import prompts as shapes_prompts
    from argen.images import to_uint8

    if not getattr(pipe, "text_conditioned", False):
        raise ArgenError("ShapesEval needs a text-conditioned model (a *-shapes preset)")
    metrics, images, captions, t0 = {}, [], [], time.time()
    for split in splits:
        specs = shapes_prompts(split, n)
        texts = [p.caption for p in specs]
        split_images = to_uint8(pipe(prompts=texts, seed=seed, batch_size=batch_size, progress=progress,
                                     **sampler_overrides))
        metrics.update(shapes_metrics(split_images, specs, "" if split == "test" else split))
        images.append(split_images)
        captions += texts
    settings = pipe.settings.replace(**sampler_overrides)
    metrics.update(seconds_per_image=(time.time() - t0) / (n * len(splits)), family=pipe.generator.family,
                   sampler=settings.to_dict(), sampler_name=pipe.sampler.name, lossy=is_lossy(settings), seed=seed)
    return metrics, np.concatenate(images), captions


def checkpoint_dataset(pipe) -> str | None:
    """The data set a checkpoint was trained on (``meta.data``), if it says."""
    return pipe.record.meta.get("data") if pipe.record is not None else None


def evaluate_checkpoint(pipe, n: int = 1000, seed: int = 0, device: str | torch.device = "cpu",
                        batch_size: int = 250, progress: bool = False, **sampler_overrides):
    """Sample ``n`` images (classes balanced, seeded) from a ``Pipeline`` loaded from a checkpoint folder and
    compute every metric of its data set's reference classifier; returns (metrics, images, labels)."""
    dataset = checkpoint_dataset(pipe)
    if dataset not in SHORT:
        raise ArgenError(f"trained on {dataset!r}; argen eval has reference classifiers for {', '.join(SHORT)}; "
                         "compare its samples with your own images with --reference REF --inception-weights W")
    images, labels, made = sample_checkpoint(pipe, n, seed, batch_size, progress, **sampler_overrides)
    metrics = evaluate_samples(images, labels, dataset, seed=seed, device=device, progress=progress)
    bpt = bits_per_token(pipe, dataset)
    if bpt is not None:
        metrics["bits_per_token"] = bpt
    metrics.update(dataset=dataset, **made)
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


def _read_samples(samples: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """A samples ``.npz``: images uint8 (N, H, W, C), labels or None, and how they were made (or None)."""
    try:
        with np.load(samples) as z:
            adm = "images" not in z and "arr_0" in z  # `argen sample --format adm`, or another suite's file
            images, labels = (z["arr_0"], z.get("arr_1")) if adm else (z["images"], z.get("labels"))
            made = json.loads(str(z["meta"])) if "meta" in z else None  # sampler, settings, lossy
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ArgenError(f"--samples: cannot read images from {samples}: {e}") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ArgenError(f"--samples: expected uint8 images (N, H, W, C) as `argen sample` writes, got "
                         f"{images.dtype} {images.shape}")
    if adm and images.shape[-1] == 3 and (images == images[..., :1]).all():
        images = images[..., :1]  # grey images repeated over RGB for the FID suites: one channel again
    return images, labels, made


def _sample_captions(samples: str | Path, labels: np.ndarray | None) -> list[str]:
    """Each image's caption in a text model's samples file (``argen sample --prompt``: ``prompts[labels[i]]``)."""
    with np.load(samples) as z:
        prompts = z["prompts"].tolist() if "prompts" in z else None
    if prompts is None or labels is None:
        raise ArgenError(f"--samples {samples}: --data shapes scores a text model's samples; this file has no "
                         "prompts (write it with `argen sample --prompt ...` or `--prompts-file F`)")
    return [prompts[int(i)] for i in labels]


def run_eval(out: str | Path, *, checkpoint: str | Path | None = None, samples: str | Path | None = None,
             data: str | None = None, n: int = 1000, seed: int = 0, device: str | torch.device = "cpu",
             progress: bool = True, inception_weights: str | Path | None = None, reference: str | Path | None = None,
             pipe=None, **sampler_overrides) -> dict:
    """Evaluate a generator checkpoint (sampling ``n`` images) or a samples ``.npz``; write ``out/metrics.json``,
    ``out/report.html`` (and ``out/samples.npz`` when sampling). Returns the metrics. ``pipe``: the
    ``Pipeline`` of ``checkpoint`` when the caller has loaded it already (it is loaded once).

    The data set's reference-classifier metrics where argen has a classifier for it (digits, Fashion-MNIST);
    with ``reference`` (a folder or ``.npz`` of images) and ``inception_weights``, the Inception metrics
    against those images (``reference_metrics``), for any model; with ``inception_weights`` alone, the FID
    against the data set's test split (``inception_fid``)."""
    import argen.checkpoint as ckpt
    from argen.evaluation.report import render_report
    from argen.images import write_files

    out = Path(out)
    device = str(torch.device(device))
    log_rows, title, sampled, made, dataset, captions = None, "argen eval", False, None, data, None
    # every input is checked (the Inception file and the reference images loaded) before sampling; nothing
    # is written until the end
    if reference is not None and inception_weights is None:
        raise ArgenError("--reference: comparing samples with reference images needs --inception-weights PATH "
                         "(the Inception-v3 weights file, e.g. pt_inception-2015-12-05-6726825d.pth)")
    scorer = load_scorer(inception_weights, device) if inception_weights is not None else None
    if checkpoint is not None:
        if pipe is None:
            from argen.pipeline import Pipeline

            pipe = Pipeline.from_pretrained(checkpoint, device)
        dataset = checkpoint_dataset(pipe)
        if reference is not None:
            size = pipe.tokenizer.config.image_size
            ref = load_reference(reference, (size, size), progress)
        try:
            if pipe.text_conditioned:
                if dataset != "shapes":
                    raise ArgenError(f"trained on {dataset!r}: argen eval scores text models trained on shapes "
                                     "(ShapesEval); sample yours with `argen sample --prompts-file F` and compare "
                                     "with `argen eval --samples FILE.npz --reference REF --inception-weights W`")
                n_test = min(n, SHAPES_EVAL_MAX)
                metrics, images, captions = shapes_eval_checkpoint(pipe, n=n_test, seed=seed,
                                                                   progress=progress, **sampler_overrides)
                # the test prompts' images against the real test scenes (the held-out ones have no real
                # counterpart in the same proportions)
                metrics.update(sample_feature_metrics(images[:n_test], dataset, seed, device), dataset=dataset)
                labels = np.arange(len(images))  # image i was asked for captions[i]
            elif dataset in SHORT or reference is None:  # no classifier and no reference: evaluate_checkpoint says so
                metrics, images, labels = evaluate_checkpoint(pipe, n=n, seed=seed, device=device,
                                                              progress=progress, **sampler_overrides)
            else:
                images, labels, made = sample_checkpoint(pipe, n, seed, progress=progress, **sampler_overrides)
                metrics = {"dataset": dataset, **made}
        except ArgenError as e:
            raise type(e)(f"{checkpoint}: {e}") from None
        sampled = True
        log = Path(checkpoint) / "log.jsonl"
        log_rows = ckpt.read_log(log) if log.is_file() else None
        title = f"argen eval: {pipe.record.preset or Path(checkpoint).name}"
    else:
        if data is None and reference is None:
            raise ArgenError("--data: evaluating a samples file needs the dataset it imitates (digits, fashion-mnist) "
                             "or --reference REF, images to compare it with")
        images, labels, made = _read_samples(samples)
        if reference is not None:
            ref = load_reference(reference, images.shape[1:3], progress)
        if data == "shapes":  # a text model's samples: each image against its prompt
            captions = _sample_captions(samples, labels)
            metrics = {**shapes_metrics(images, captions), **sample_feature_metrics(images, data, seed, device)}
        elif data is not None:
            check_samples(images, labels, data, samples)
            metrics = evaluate_samples(images, labels, data, seed=seed, device=device, progress=progress)
        elif len(images) < MIN_SAMPLES:
            raise ArgenError(f"--samples {samples}: {len(images)} images; the metrics need at least {MIN_SAMPLES}")
        else:
            metrics = {}
        metrics["dataset"] = data
        if made is not None:
            metrics["samples_meta"] = made
        title = f"argen eval: {Path(samples).name}"
    classifier = dataset in SHORT and captions is None  # a text model's labels are its prompts' indices
    if classifier:
        metrics["floor"] = real_floor(dataset, n=len(images), seed=seed, device=device)
    if reference is not None:
        metrics.update(reference_metrics(images, ref, *scorer, seed=seed, device=device, progress=progress),
                       reference=str(reference))
    elif scorer is not None:
        metrics.update(inception_fid(images, dataset, scorer[0], seed=seed, device=device, progress=progress))
    if classifier:
        classes = list(load_dataset(dataset, "test").classes)
        html = render_report(metrics, images, labels, classes, _nn_pairs(images, labels, dataset, device), log_rows,
                             title)
    else:  # no class names and no classifier: one grid of samples (a 1000-class grid would be huge)
        html = render_report(metrics, images, None, [], None, log_rows, title)
    files = {out / "metrics.json": lambda f: f.write(ckpt.json_text(metrics).encode()),
             out / "report.html": lambda f: f.write(html.encode())}
    if sampled:
        extra = {"prompts": np.array(captions)} if captions is not None else {}
        files[out / "samples.npz"] = lambda f: np.savez_compressed(f, images=images, labels=labels.astype(np.int64),
                                                                   **extra)
    write_files(files)  # all three or none (a full disk keeps an earlier evaluation whole)
    return metrics
