"""A tiny training process for tests/integration/test_faults.py, so that tests can signal and kill it for real.

It trains with the framework's own callbacks (conf/callbacks/default.yaml through `build_callbacks`), trainer
plugins (the atomic checkpoint writer) and resume rule (`last.ckpt` when it exists). A buffer of `--blob-mb`
makes checkpoints big enough for a kill to land inside a write; `--grow-at/--grow-mb` enlarges it at a step
(to hit a file-size limit on a later save only). Each step writes its number to `<out>/progress`.
Prints one JSON line at the end: {"resumed_from": step or null, "final_step": step}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from src import atomic_io  # noqa: E402
from src.export import checkpoint_exists, checkpoint_step  # noqa: E402
from src.trainers.callbacks import build_callbacks  # noqa: E402
from src.trainers.checkpoint_io import trainer_plugins  # noqa: E402

MB = 2**20 // 4  # float32 elements per MiB


class BlobRegression(L.LightningModule):
    def __init__(self, blob_mb: float, grow_at: int, grow_mb: float, progress: Path, sleep: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.register_buffer("blob", torch.zeros(int(blob_mb * MB)))
        self.grow_at, self.grow_mb, self.progress, self.sleep = grow_at, grow_mb, progress, sleep

    def training_step(self, batch, batch_idx):
        if self.global_step == self.grow_at:
            self.blob = torch.zeros(int(self.grow_mb * MB))
        atomic_io.write_text(self.progress, str(self.global_step))
        time.sleep(self.sleep)
        x = batch[0]
        return torch.nn.functional.mse_loss(self.layer(x), x.sum(1, keepdim=True))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--every-n", type=int, default=2)
    parser.add_argument("--blob-mb", type=float, default=0.0)
    parser.add_argument("--grow-at", type=int, default=-1)
    parser.add_argument("--grow-mb", type=float, default=0.0)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    out = Path(args.out)
    cfg = OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml")
    cfg.checkpoint.every_n_train_steps = args.every_n
    cfg.checkpoint.save_top_k = 0  # only last.ckpt: the file a rerun resumes from
    cfg.learning_rate_monitor = cfg.throughput = False
    cfg.sample_videos = None
    last = out / "checkpoints" / "last.ckpt"
    resumed = checkpoint_step(last) if checkpoint_exists(last) else None
    trainer = L.Trainer(
        max_steps=args.max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
        callbacks=build_callbacks(cfg, out),
        plugins=trainer_plugins(),
    )
    module = BlobRegression(args.blob_mb, args.grow_at, args.grow_mb, out / "progress", args.sleep)
    data = torch.utils.data.TensorDataset(torch.randn(4096, 4))
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4), ckpt_path=str(last) if resumed is not None else None)
    print(json.dumps({"resumed_from": resumed, "final_step": trainer.global_step}), flush=True)


if __name__ == "__main__":
    main()
