"""Inference pipelines behind `python -m src.sample`: one module per system, each with `run(cfg) -> records`."""
