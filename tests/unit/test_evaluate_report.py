"""python -m src.report: markdown + self-contained HTML with our rows beside the published ones; W&B offline."""

from __future__ import annotations

import json
import re

from src.eval.published import PUBLISHED
from src.report import build_report, collect, main


def _run(folder, protocol, metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"protocol": protocol, "metrics": metrics, "counts": {"generated": 4, "real": 4, "paired": 4}}))
    return folder


def test_report_has_our_rows_and_published_rows(tmp_path, monkeypatch):
    unchecked = {"method": "Unchecked baseline", "values": {"fvd": 999.5}, "source": "some table",
                 "verified": False, "unverified_because": "a row nobody could read in the paper's table"}
    monkeypatch.setitem(PUBLISHED, "dynamicrafter_ucf101", [*PUBLISHED["dynamicrafter_ucf101"], unchecked])
    tiktok = _run(tmp_path / "tiktok_run", "animate_anyone_tiktok", {"ssim": 0.5123, "psnr": 17.25, "fvd": 321.5})
    ucf = _run(tmp_path / "ucf_run", "dynamicrafter_ucf101", {"fvd": 512.25, "kvd": 40.5, "kvd_std": 2.0, "pic": 0.61})
    train = tmp_path / "train_run"
    train.mkdir()
    (train / "summary.json").write_text(json.dumps(
        {"experiment": "animate_anyone_demo", "metrics": {"heldout": {"trained": {"ssim": 0.7, "psnr": 20.0}}}}))
    paths = build_report([tiktok, ucf, train], tmp_path / "report", wandb_mode="disabled")
    md = paths["md"].read_text()
    assert "## animate_anyone_tiktok" in md and "## dynamicrafter_ucf101" in md
    assert "| **ours: tiktok_run** | 0.5123 | 17.25 | 321.50 |" in md
    assert "| Animate Anyone | 0.7180 | 29.56 | 171.90 |" in md  # published row, same column order
    assert "| DynamiCrafter | 429.23 | 62.47 | 0.6078 |" in md  # a verified row carries no mark
    assert "Unchecked baseline †" in md and "DynamiCrafter †" not in md  # unverified published rows are marked
    assert "kvd_std" not in md
    assert "animate_anyone_demo (held-out)" in md and "trained" in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") + page.count("<svg") >= 7  # one chart per metric and protocol
    assert not re.search(r"(src|href)=['\"]https?://", page)  # self-contained
    assert "UniAnimate*" in page
    tables = collect([tiktok])
    assert len(tables["animate_anyone_tiktok"]) == 1 + len(PUBLISHED["animate_anyone_tiktok"])


def test_report_cli_and_wandb_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = _run(tmp_path / "rr", "rerender", {"fram_acc": 0.9, "tem_con": 0.97, "pixel_mse": 0.05})
    main([str(run), "--out", str(tmp_path / "out"), "--wandb", "offline"])
    assert "report.html" in capsys.readouterr().out
    assert "Rerender-A-Video" in (tmp_path / "out" / "report.md").read_text()
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*"))
