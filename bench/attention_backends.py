"""Forward+backward time of F.scaled_dot_product_attention per SDPA backend (flash, efficient, cudnn, math), side
by side, on the attention shapes of our models in bf16:
- aa_768_spatial: Animate Anyone stage 1 at 768x768, level-0 self-attention with reference tokens (96*96 queries,
  2*96*96 keys), batch 4, 8 heads of 40.
- aa_512_temporal: stage 2 motion module at 512x512 level 0 (64*64*batch sequences of 24 frames), 8 heads of 40.
- dc_512_spatial: DynamiCrafter 512 level 0 (40*64 tokens, 16 frames x batch 2), 5 heads of 64.

    python bench/attention_backends.py [--repeats 20]

Writes bench/results/attention_backends_<gpu>_<time>.json; prints ms and speed-up over math.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import require_cuda, table, write_results  # noqa: E402
from src.trainers.performance import SDPA_BACKENDS, sdpa_backend_context  # noqa: E402

# name: (batch, heads, queries, keys, head_dim)
SHAPES = {
    "aa_768_spatial": (4, 8, 96 * 96, 2 * 96 * 96, 40),
    "aa_512_temporal": (64 * 64, 8, 24, 24, 40),
    "dc_512_spatial": (32, 5, 40 * 64, 40 * 64, 64),
}


def time_backend(backend: str, shape, repeats: int, device) -> float | None:
    b, h, nq, nk, d = shape
    q = torch.randn(b, h, nq, d, device=device, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(b, h, nk, d, device=device, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(b, h, nk, d, device=device, dtype=torch.bfloat16, requires_grad=True)
    try:
        with sdpa_backend_context(backend):
            for i in range(repeats + 3):
                if i == 3:
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v).sum().backward()
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats * 1e3
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
        print(f"  {backend} unavailable for {shape}: {str(err).splitlines()[0][:100]}")
        return None
    finally:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = require_cuda("bench/attention_backends.py")
    backends = list(SDPA_BACKENDS)
    results = {
        name: {be: time_backend(be, shape, args.repeats, device) for be in backends}
        for name, shape in SHAPES.items()
    }
    rows = [["shape", *[f"{be} ms" for be in backends], *[f"{be} x math" for be in backends if be != "math"]]]
    for name, r in results.items():
        ms = [f"{r[be]:.2f}" if r[be] else "-" for be in backends]
        speed = [
            f"{r['math'] / r[be]:.1f}" if r[be] and r["math"] else "-" for be in backends if be != "math"
        ]
        rows.append([name, *ms, *speed])
    print(table(rows))
    print(f"wrote {write_results('attention_backends', {'shapes': SHAPES, 'ms_fwd_bwd': results})}")


if __name__ == "__main__":
    main()
