"""Evaluation entry point: `python -m src.evaluate eval=<protocol> [eval.mode=model] [hydra.run.dir=DIR]`.

Protocols are conf/eval/*.yaml; the work is in src/eval/runner.py. Shards of a SLURM array:
`eval.num_shards=N eval.shard_index=$SLURM_ARRAY_TASK_ID hydra.run.dir=DIR`, then the same command with
`eval.merge=true` writes DIR/metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.config import register_resolvers
from src.config_checks import check_config_or_exit

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    check_config_or_exit(cfg, "evaluate")  # before anything is built
    from src.eval.runner import run_evaluation
    from src.log_setup import readable_logs

    readable_logs()

    run_evaluation(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
