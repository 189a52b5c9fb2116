"""`bench/gpu_suite.py --smoke`: the one-command GPU suite runs end to end on the CPU at tiny shapes (CI keeps it
working) and writes its JSON with every section filled."""

from __future__ import annotations

import json

import pytest

from bench import gpu_suite

# About 12 s on an idle 2-core CPU (minutes on a heavily loaded one); the Rerender sections add about 1 s.

def test_smoke_suite_writes_every_section(tmp_path, capsys):
    out = tmp_path / "suite.json"
    gpu_suite.main(["--smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["smoke"] and report["device"] == "cpu" and report["peak_tflops"] is None
    assert set(report["steps"]) == set(gpu_suite.configs(smoke=True))
    for name, entry in report["steps"].items():
        assert entry["flops_per_step"] > 0, name
        for variant in entry["variants"]:
            assert "error" not in variant, (name, variant)
            # TFLOP/s is the counted FLOPs over the measured step time
            assert variant["tflops"] * 1e12 * variant["step_s"] == pytest.approx(entry["flops_per_step"])
        assert {v["checkpointing"] for v in entry["variants"]} == {False, True}
    assert report["ema"]["tensors"] > 600 and report["ema"]["foreach_ms"] > 0  # an SD1.5 UNet's parameter list
    assert [r["system"] for r in report["reference_step"]] == ["aa", "dc"]
    assert all(r["ours_speedup"] > 0 and r["cached_speedup"] > 0 for r in report["reference_step"])
    assert report["i3d"]["clips_per_s"] > 0
    assert report["loader"]["samples_per_s"] > 0
    assert report["rerender_keyframes"]["seconds_per_key_frame"] > 0 and report["rerender_keyframes"]["keys"] == 2
    propagation = report["rerender_propagation"]
    assert propagation["seconds_per_non_key_frame"] > 0 and propagation["keys"] == [0, 3]
    assert propagation["results"]["propagation (ours)"]["psnr"] > 0
    assert set(gpu_suite.BENCHES) <= set(report["seconds"])
    printed = capsys.readouterr().out
    assert "config" in printed and "MFU" in printed and f"wrote {out}" in printed
    assert "per key frame (target < 3)" in printed
