"""argen bench: forward passes counted per sampling call match what each sampler must do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import tiny_maskgit, tiny_vq
from test_contracts import FAMILIES, pipeline

from argen.cli import main
from argen.evaluation.bench import bench, format_table
from argen.pipeline import Pipeline


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_passes_per_image_and_fields(family):
    rows = bench(pipeline(family), batch_sizes=(1, 3), repeats=1, warmup=0)
    assert [r["batch_size"] for r in rows] == [1, 3]
    for r in rows:  # every image of the batch rides in each call: the same counts at batch 1 and 3
        assert r["family"] == family and {k: r.get(k) for k in FAMILIES[family].cost} == FAMILIES[family].cost
        assert r["images_per_s"] > 0 and r["s_per_image"] > 0 and r["params"] > 0
    assert f"| {family} |" in format_table(rows)


def test_peak_memory_sees_an_allocation_inside_the_block():
    # In a fresh process: in a test worker the C allocator may still hold free memory from earlier tests
    # and serve the 64 MB from it, so the resident set would not grow (the flake this test once had).
    code = ("import torch\nfrom argen.evaluation.bench import _PeakRSS\nwith _PeakRSS() as rss:\n"
            "    x = torch.ones(16 * 2**20)  # 64 MB, touched\n    del x\nprint(rss.growth)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.split()[-1]) >= 48 * 2**20


def test_cli_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    Pipeline(tiny_vq(), tiny_maskgit(), {"steps": 4}).save_pretrained(tmp_path / "g")
    assert main(["bench", "--checkpoint", str(tmp_path / "g"), "--batch-sizes", "1,2", "--repeats", "1",
                 "--out", str(tmp_path / "b.json"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| maskgit |" in out and len(json.loads((tmp_path / "b.json").read_text())) == 2
    assert main(["bench", "--checkpoint", str(tmp_path / "g"), "--batch-sizes", "2", "--repeats", "1", "--json",
                 "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON document
    assert [r["batch_size"] for r in rows] == [2] and rows[0]["forward_calls"] == 4
    with pytest.raises(SystemExit) as e:  # refused by the parser, before anything is loaded
        main(["bench", "--checkpoint", str(tmp_path / "g"), "--batch-sizes", "1,x"])
    assert e.value.code == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert main(["bench", "--checkpoint", str(tmp_path / "g"), "--ar-steps", "3"]) == 2
    assert "--ar-steps does not apply to sampler maskgit (maskgit models)" in capsys.readouterr().err
