"""Training entry point: `python -m src.train experiment=<name> [stage=...] [hydra.run.dir=DIR]`."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.config import register_resolvers
from src.config_checks import check_config_or_exit

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    check_config_or_exit(cfg, "train")  # before anything is built
    from src.log_setup import readable_logs
    from src.trainers.runner import run

    readable_logs()

    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
