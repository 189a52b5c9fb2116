"""`bench/reference_step.py --moore-src / --dynamicrafter-src`: the parts that need no official code.

CI has no official checkout, so these check that a missing or wrong path stops the bench at once with the fix,
before any network is built, and that a checkout with the official files is accepted."""

from __future__ import annotations

import pytest

from bench import reference_step
from bench.official_step_dynamicrafter import DC_FILES, check_dynamicrafter_src
from bench.official_step_moore import MOORE_FILES, check_moore_src, to_3d


def run_bench(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        reference_step.main(argv)
    assert exit_info.value.code == 2  # argparse's usage error, not a crash
    return capsys.readouterr().err


def test_official_pythonpath_without_moore_src_says_how(capsys):
    err = run_bench(["--official-pythonpath", "/tmp/site"], capsys)
    assert "--moore-src is required" in err and "Moore-AnimateAnyone" in err


def test_moore_src_not_a_directory(tmp_path, capsys):
    err = run_bench(["--moore-src", str(tmp_path / "absent")], capsys)
    assert "is not a directory" in err and "clone" in err


def test_moore_src_not_a_checkout_names_the_missing_files(tmp_path, capsys):
    (tmp_path / "train_stage_1.py").write_text("")
    err = run_bench(["--moore-src", str(tmp_path)], capsys)
    assert "not a Moore-AnimateAnyone checkout" in err
    assert "src/models/unet_3d.py" in err and "train_stage_1.py," not in err


def test_dynamicrafter_src_not_a_checkout(tmp_path, capsys):
    err = run_bench(["--dynamicrafter-src", str(tmp_path)], capsys)
    assert "not a DynamiCrafter checkout" in err and "lvdm/modules/networks/openaimodel3d.py" in err


def test_checkouts_with_the_official_files_are_accepted(tmp_path):
    for files, check in ((MOORE_FILES, check_moore_src), (DC_FILES, check_dynamicrafter_src)):
        root = tmp_path / check.__name__
        for name in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("")
        assert check(root) == root.resolve()


def test_denoising_unet_config_is_the_3d_rewrite():
    unet = {
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D"],
    }
    out = to_3d(unet)
    assert out["down_block_types"] == ["DownBlock3D", "CrossAttnDownBlock3D"]
    assert (
        out["up_block_types"] == ["CrossAttnUpBlock3D"] and out["mid_block_type"] == "UNetMidBlock3DCrossAttn"
    )
    assert unet["down_block_types"][0] == "DownBlock2D"  # the 2D config is left as it was
