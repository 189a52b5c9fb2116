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
    # the cache step through the real Animate Anyone experiment with its file-backed parts swapped for random ones
    assert set(report["cache_step"]) == set(gpu_suite.cache_step.configs(smoke=True))
    assert report["cache_step"]["aa_stage1_64px_b1"]["experiment"] == "animate_anyone"
    assert report["cache_step"]["aa_stage1_64px_b1"]["frames_hw"] == "1x64x64"
    assert all(r["ours_ms"] > 0 and r["ours_cached_ms"] > 0 for r in report["cache_step"].values())
    assert report["i3d"]["clips_per_s"] > 0
    assert report["loader"]["samples_per_s"] > 0
    assert report["rerender_keyframes"]["seconds_per_key_frame"] > 0 and report["rerender_keyframes"]["keys"] == 2
    propagation = report["rerender_propagation"]
    assert propagation["seconds_per_non_key_frame"] > 0 and propagation["keys"] == [0, 3]
    assert propagation["results"]["propagation (ours)"]["psnr"] > 0
    assert set(gpu_suite.BENCHES) <= set(report["seconds"])
    printed = capsys.readouterr().out
    assert "config" in printed and "MFU" in printed and f"wrote {out}" in printed
    assert "per key frame (target < 3)" in printed and "cache target" in printed


def test_budget_skips_sections_and_a_failing_section_spares_the_rest(tmp_path, monkeypatch, capsys):
    """A lease runs out: with the budget spent every later section is listed as skipped (the JSON still written);
    a section that raises is recorded with its error and the next one still runs."""
    out = tmp_path / "suite.json"
    report = gpu_suite.main(["--smoke", "--out", str(out), "--budget-s", "0"])
    names = [name for name, _ in gpu_suite.Suite(report_args(out), gpu_suite.torch.device("cpu"), out).plan()]
    assert report["skipped_for_budget"] == names and json.loads(out.read_text())["skipped_for_budget"] == names
    assert names[0] == "steps_baseline" and "pytest_gpu" in names

    def broken(smoke):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(gpu_suite, "BENCHES", {"broken": broken, "ok": lambda smoke: {"fine": True}})
    monkeypatch.setattr(gpu_suite, "configs", lambda smoke: {})
    monkeypatch.setattr(gpu_suite.reference_step, "measure", lambda *a, **k: {})
    monkeypatch.setattr(gpu_suite.reference_step, "rows", lambda results: [["system"]])
    monkeypatch.setattr(gpu_suite, "loader_throughput", lambda *a: {"skipped": "test"})
    monkeypatch.setattr(gpu_suite, "i3d_throughput", lambda *a: {"skipped": "test"})
    report = gpu_suite.main(["--smoke", "--out", str(out)])
    assert report["failed_sections"] == ["broken"] and "no such kernel" in report["broken"]["error"]
    assert report["ok"] == {"fine": True} and json.loads(out.read_text())["ok"] == {"fine": True}
    assert "FAILED section broken" in capsys.readouterr().out


def report_args(out):
    return gpu_suite.argparse.Namespace(smoke=True, steps=1, full_grid=False, skip_pytest=False, loader_workers=0,
                                        budget_s=0, out=out, dynamicrafter_src=None, moore_src=None,
                                        official_pythonpath=None)
