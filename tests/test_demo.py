"""`argen demo` end to end with a tiny step budget: the three files, a reusable second run."""

import json

import numpy as np

from argen.cli import main
from argen.evaluation.classifier import class_accuracy


def test_demo_writes_samples_and_metrics_and_reuses_finished_checkpoints(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--tokenizer-steps", "5", "--generator-steps", "5", "--quiet",
            "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    data = np.load(out / "samples.npz")
    assert data["images"].shape == (200, 8, 8, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [c for c in range(10) for _ in range(20)]
    m = json.loads((out / "metrics.json").read_text())
    judged = class_accuracy(data["images"], data["labels"], "digits")  # the metric is what the judge says
    assert m["samples"]["class_accuracy"] == judged["class_accuracy"] and "class_accuracy_9" in m["samples"]
    assert "test_psnr" in m["tokenizer"] and "test_usage_s0" in m["tokenizer"]
    weights = (out / "generator" / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # finished checkpoints are reused, not retrained
    assert (out / "generator" / "model.safetensors").stat().st_mtime_ns == weights
    assert np.array_equal(np.load(out / "samples.npz")["images"], data["images"])  # same seed, same samples
