"""The standard-FID Inception-v3: architecture (random weights; the real file is never downloaded),
strict loading of a user's weights file, and `argen eval --inception-weights`.

The full network at its 299 px input is run by the strict-loading test; the others keep CPU time
down: the grey/colour test resizes to Inception-v3's smallest input (75 px), and the CLI test, which
checks the plumbing, loads a one-conv stand-in with the same loader."""

import json

import numpy as np
import pytest
import torch

from argen.cli import main
from argen.errors import ArgenError
from argen.evaluation import inception
from argen.evaluation.inception import FEATURE_DIM, BasicConv2d, InceptionV3, load_inception

# torchvision's inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and the
# 1000-way fc (2,049,000) the feature extractor keeps 21,785,568, in 94 conv + BN units.
FEATURE_PARAMS = 21_785_568


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = InceptionV3().eval()
    for mod in m.modules():  # non-trivial BN statistics, so that a wrong load would show
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def weights_file(net, tmp_path_factory):
    # As pytorch-fid's file: torchvision names, a 1008-way fc, no BN step counters, legacy format.
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1008, FEATURE_DIM), torch.zeros(1008)
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    return path


def test_architecture_matches_torchvision_counts(net):
    assert sum(p.numel() for p in net.parameters()) == FEATURE_PARAMS
    assert sum(k.endswith(".conv.weight") for k in net.state_dict()) == 94
    # the TF graph's quirk: only the last E block max-pools
    assert [net.Mixed_7b.max_pool, net.Mixed_7c.max_pool] == [False, True]


def test_features_of_grey_and_colour_images(net, monkeypatch, one_thread):
    monkeypatch.setattr(inception, "INPUT_SIZE", 75)  # the least torchvision's Inception-v3 takes: 16x cheaper
    seen = []
    hook = net.Conv2d_1a_3x3.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    grey = torch.cat([torch.full((1, 1, 28, 28), -1.0), torch.rand(1, 1, 28, 28)])  # black, bright noise
    try:
        with torch.inference_mode():
            f_grey = net.features(grey)
            f_rgb = net.features(grey.expand(-1, 3, -1, -1))
    finally:
        hook.remove()
    assert seen == [(2, 3, 75, 75)] * 2  # grey repeated to three channels, resized to the input size
    assert f_grey.shape == (2, FEATURE_DIM)
    assert (f_grey >= 0).all()  # a mean of ReLU outputs
    torch.testing.assert_close(f_grey, f_rgb)
    assert not torch.allclose(f_grey[0], f_grey[1])


def test_weights_file_loads_strictly_and_gives_the_same_features(net, weights_file):
    loaded = load_inception(weights_file)
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(loaded.features(x), net.features(x))


def test_wrong_weights_files_are_one_line_errors(net, tmp_path):
    sd = dict(net.state_dict())
    del sd["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(ArgenError, match=r"1 missing.*Mixed_6b\.branch7x7_2\.conv\.weight"):
        load_inception(tmp_path / "missing.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "missing.pth").read_bytes()[:1000])
    with pytest.raises(ArgenError, match="--inception-weights: .*truncated or corrupt"):
        load_inception(tmp_path / "cut.pth")
    with pytest.raises(ArgenError, match="no such file"):
        load_inception(tmp_path / "nope.pth")


class StandIn(torch.nn.Module):
    """The FID network's interface at a fraction of its cost, for the CLI test (which checks the
    plumbing: the flag, the strict loader, features of samples and real images, the metric): one
    torchvision-named conv + BN unit, 16-d pooled features; counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 16, kernel_size=3, stride=2)
        self.images = 0

    def features(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        self.images += len(x_BCHW)
        return self.Conv2d_1a_3x3(x_BCHW.expand(-1, 3, -1, -1)).mean((2, 3))

    forward = features


def test_eval_cli_adds_the_standard_fid(tmp_path, capsys, monkeypatch):
    built = []  # what load_inception builds (and fills from the file)
    monkeypatch.setattr(inception, "InceptionV3", lambda: built.append(StandIn()) or built[-1])
    torch.manual_seed(0)
    # as pytorch-fid's file: torchvision names, a 1008-way fc, no BN step counters, legacy format
    sd = {k: v for k, v in StandIn().state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1008, 16), torch.zeros(1008)
    weights_file = tmp_path / "pt_inception.pth"
    torch.save(sd, weights_file, _use_new_zipfile_serialization=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images, labels=np.arange(6) % 10)
    code = main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "digits", "--inception-weights",
                 str(weights_file), "--out", str(tmp_path / "ev"), "--quiet", "--threads", "1", "--device", "cpu"])
    assert code == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["FID_n_real"] == 6
    assert np.isfinite(metrics["FID"]) and metrics["FID"] > 0  # noise vs digits: far apart
    [loaded] = built  # the loader's network, filled from the file, saw the 6 samples and 6 real images
    assert loaded.images == 12
    assert torch.equal(loaded.Conv2d_1a_3x3.conv.weight, sd["Conv2d_1a_3x3.conv.weight"])

    code = main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "digits", "--inception-weights",
                 str(tmp_path / "nope.pth"), "--out", str(tmp_path / "ev2"), "--quiet", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--inception-weights" in err[0]
