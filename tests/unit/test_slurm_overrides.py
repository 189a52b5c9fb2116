"""src.slurm_overrides: multirun spec -> one shell-quoted line per array task, and back."""

from __future__ import annotations

import pytest

from src.slurm_overrides import (
    expand_sweep,
    format_task_line,
    main,
    read_task,
    sbatch_command,
    write_overrides_file,
)


def test_cartesian_product_in_hydra_order():
    assert expand_sweep(["model.lr=1e-5,3e-5", "seed=1,2", "stage=spatial"]) == [
        ["model.lr=1e-05", "seed=1", "stage=spatial"],
        ["model.lr=1e-05", "seed=2", "stage=spatial"],
        ["model.lr=3e-05", "seed=1", "stage=spatial"],
        ["model.lr=3e-05", "seed=2", "stage=spatial"],
    ]
    assert expand_sweep(["seed=range(0,3)"]) == [["seed=0"], ["seed=1"], ["seed=2"]]


def test_quoted_values_survive_the_file(tmp_path):
    tasks = expand_sweep(["run_name='a b, c'", '+tag=x,"y z"'])
    assert len(tasks) == 2
    path = write_overrides_file(tmp_path / "sweep.txt", tasks)
    assert [read_task(path, i) for i in range(2)] == tasks
    assert tasks[0][0] == "run_name='a b, c'"


def test_task_index_out_of_range_names_the_fix(tmp_path):
    path = write_overrides_file(tmp_path / "s.txt", [["seed=1"]])
    with pytest.raises(IndexError, match="--array=0-0"):
        read_task(path, 1)


def test_sbatch_command_and_cli(tmp_path, capsys):
    assert (
        sbatch_command(tmp_path / "s.txt", 4, 2)
        == f"sbatch --array=0-3%2 slurm/array.sbatch {tmp_path}/s.txt"
    )
    assert sbatch_command(tmp_path / "s.txt", 1, None).startswith("sbatch --array=0-0 slurm/array.sbatch")
    assert main([str(tmp_path / "t.txt"), "seed=1,2,3", "--parallel", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"sbatch --array=0-2%2 slurm/array.sbatch {tmp_path}/t.txt"
    assert main(["--task", str(tmp_path / "t.txt"), "2"]) == 0
    assert capsys.readouterr().out == "seed=3\n"


def test_hydra_sweeps_and_line_breaks_are_refused():
    with pytest.raises(ValueError, match="hydra"):
        expand_sweep(["hydra.run.dir=a,b"])
    with pytest.raises(ValueError, match="line break"):
        format_task_line(["a=1\nb=2"])
