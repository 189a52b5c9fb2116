"""`sample.score=true`: a Rerender output scored with the `eval=rerender` protocol by src.evaluate's own runner.

The output folder is already folder-mode input (`<out>/rerender.mp4` is the generated video named `rerender`), so
the run composes conf/evaluate.yaml with `eval=rerender` and `sample.score_overrides`, points it at `<out>`, and
calls `run_evaluation`: the numbers are those `python -m src.evaluate eval=rerender eval.generated_dir=<out>` gives.
Fram-Acc's prompts come from `sample.source_prompt` (the input video) and `sample.prompt` (the edit). The eval
config is built and its weight files checked before any frame is rendered, so a missing file fails in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

__all__ = ["SCORED_NAME", "scoring_config", "score_output"]
SCORED_NAME = "rerender"  # <out>/rerender.mp4
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _compose_evaluate(overrides: list[str]) -> DictConfig:
    """conf/evaluate.yaml composed with `overrides`, inside a Hydra app (src.sample) or outside one (tests)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="evaluate", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _missing_weights(e: DictConfig) -> list[str]:
    from src.eval.runner import _weights_used

    return [f"eval.weights.{k}={v['path']}" for k, v in _weights_used(e).items() if not v["exists"]]


def scoring_config(cfg: DictConfig, out: Path) -> DictConfig:
    """The `eval=rerender` config that scores `<out>`; raises before anything runs when it cannot score."""
    from src.config_checks import check_config

    sample = cfg.sample
    overrides = ["eval=rerender", *[str(o) for o in sample.get("score_overrides") or []]]
    try:
        ecfg = _compose_evaluate(overrides)
    except Exception as err:
        raise ValueError(
            f"sample.score_overrides={list(overrides[1:])} do not compose with eval=rerender: {err}"
        ) from None
    ecfg.paths = cfg.paths  # the sample run's weights folder and output paths
    ecfg.logger = cfg.get("logger") or {}  # W&B as the sample run logs (none by default)
    ecfg.seed = cfg.seed
    e = ecfg.eval
    e.mode, e.generated_dir = "folder", str(out)
    if e.device == "auto":
        e.device = str(sample.device)
    out.mkdir(parents=True, exist_ok=True)
    keys_file = out / "scored_names.json"  # only <out>/rerender.mp4, whatever else sits in <out>
    keys_file.write_text(json.dumps([SCORED_NAME]))
    e.subset.rule, e.subset.keys_file = "keys_file", str(keys_file)
    if e.metrics.get("fram_acc") is not None and not e.prompts_file:
        source, target = sample.get("source_prompt"), sample.get("prompt")
        if not source or not target:
            raise ValueError(
                "sample.score=true scores Fram-Acc, which needs sample.source_prompt (what the input video shows) "
                f"and sample.prompt (the edit); got source_prompt={source!r}, prompt={target!r}. Set both, or give "
                "'sample.score_overrides=[\"eval.prompts_file=FILE\"]', or drop it: "
                "'sample.score_overrides=[\"eval.metrics.fram_acc=null\"]'"
            )
        prompts = out / "prompts.json"
        prompts.write_text(
            json.dumps({SCORED_NAME: {"source_prompt": source, "target_prompt": target}}, indent=2)
        )
        e.prompts_file = str(prompts)
    check_config(ecfg, "evaluate")
    missing = _missing_weights(e)
    if missing:
        raise FileNotFoundError(
            f"sample.score=true: the eval=rerender weight files {missing} do not exist. Put them there, point at "
            'them with \'sample.score_overrides=["eval.weights.clip=...","eval.weights.raft=..."]\', or drop a '
            "metric with 'sample.score_overrides=[\"eval.metrics.<name>=null\"]'"
        )
    return ecfg


def score_output(ecfg: DictConfig, out: Path) -> dict:
    """src.evaluate's runner on `<out>`: writes `<out>/metrics.json`, returns its content."""
    from src.eval.runner import run_evaluation

    if not (out / f"{SCORED_NAME}.mp4").is_file():
        raise FileNotFoundError(f"nothing to score: {out / f'{SCORED_NAME}.mp4'} was not written")
    return run_evaluation(ecfg, out)
