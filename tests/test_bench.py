"""argen bench: forward passes counted per sampling call match what each sampler must do."""

from __future__ import annotations

import json

import pytest
from helpers import TINY_SCALES, tiny_maskgit, tiny_msvq, tiny_raster, tiny_var, tiny_vq
from test_mar import tiny_kl, tiny_mar

from argen.cli import main
from argen.evaluation.bench import bench, format_table
from argen.pipeline import Pipeline

CASES = {  # family -> (pipeline, sampler settings, expected forward calls per sampling call, head calls)
    "var": (lambda: Pipeline(tiny_msvq(), tiny_var(), {"cfg": 1.0}), len(TINY_SCALES), None),
    "raster": (lambda: Pipeline(tiny_vq(), tiny_raster(), {"cfg": 1.0}), 16, None),  # prefill + 15 decode steps
    "maskgit": (lambda: Pipeline(tiny_vq(), tiny_maskgit(), {"steps": 5, "cfg": 1.0}), 5, None),
    "mar": (lambda: Pipeline(tiny_kl(), tiny_mar(), {"ar_steps": 4, "head_steps": 3, "cfg": 1.0}), 4, 12),
}


@pytest.mark.parametrize("family", CASES)
def test_forward_passes_per_image_and_fields(family):
    make, calls, head_calls = CASES[family]
    rows = bench(make(), batch_sizes=(1, 3), repeats=1, warmup=0)
    assert [r["batch_size"] for r in rows] == [1, 3]
    for r in rows:
        assert r["family"] == family and r["forward_calls"] == calls and r.get("head_calls") == head_calls
        assert r["images_per_s"] > 0 and r["s_per_image"] > 0 and r["peak_mem_mb"] >= 0 and r["params"] > 0
    assert f"| {family} |" in format_table(rows)


def test_cli_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    Pipeline(tiny_vq(), tiny_maskgit(), {"steps": 4}).save_pretrained(tmp_path / "g")
    assert main(["bench", "--checkpoint", str(tmp_path / "g"), "--batch-sizes", "1,2", "--repeats", "1",
                 "--json", str(tmp_path / "b.json"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| maskgit |" in out and len(json.loads((tmp_path / "b.json").read_text())) == 2
    assert main(["bench", "--checkpoint", str(tmp_path / "g"), "--batch-sizes", "1,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert main(["bench", "--checkpoint", str(tmp_path / "g"), "--ar-steps", "3"]) == 2
    assert "--ar-steps does not apply to maskgit" in capsys.readouterr().err
