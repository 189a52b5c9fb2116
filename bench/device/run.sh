#!/usr/bin/env bash
# The one command for a lent GPU machine: the device tool's `run` with carry [".whl"] (made here first by
# `python bench/device/wheels.py`) and command `bash bench/device/run.sh`. It installs the carried wheels beside
# the image's own torch (no registry there), checks that the project imports, then runs bench/gpu_suite.py within
# the call's time; the JSON, the log and the GPU's description come back in $OUT.
#   BUDGET=420 (seconds after which no suite section starts); extra arguments go to gpu_suite.py (--smoke on a CPU).
#   The released code's own steps are timed too when its checkouts travel in .refsrc/ (git-ignored; carry it):
#   .refsrc/DynamiCrafter (the release's lvdm/ and utils/), .refsrc/Moore-AnimateAnyone with .refsrc/moore_site
#   (diffusers==0.24.0 transformers==4.30.2 for its side), or set DYNAMICRAFTER_SRC / MOORE_SRC / OFFICIAL_PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_suite_out}
BUDGET=${BUDGET:-420}
mkdir -p "$OUT"
shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "no wheels in .whl/: run 'python bench/device/wheels.py' here and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
  || { echo "installing the carried wheels failed" >&2; exit 3; }
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi") | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/imports.txt" || exit 4
import importlib
for name in ("torch", "torchvision", "lightning", "diffusers", "transformers", "deepspeed", "hydra", "av",
             "webdataset", "open_clip", "src.train", "src.sample", "src.evaluate", "bench.gpu_suite"):
    module = importlib.import_module(name)
    print(f"{name} {getattr(module, '__version__', '')}")
PY
official=()
DYNAMICRAFTER_SRC=${DYNAMICRAFTER_SRC:-.refsrc/DynamiCrafter}
MOORE_SRC=${MOORE_SRC:-.refsrc/Moore-AnimateAnyone}
OFFICIAL_PYTHONPATH=${OFFICIAL_PYTHONPATH:-.refsrc/moore_site}
[ -d "$DYNAMICRAFTER_SRC/lvdm" ] && official+=(--dynamicrafter-src "$DYNAMICRAFTER_SRC")
if [ -d "$MOORE_SRC/src" ] && [ -d "$OFFICIAL_PYTHONPATH" ]; then
  official+=(--moore-src "$MOORE_SRC" --official-pythonpath "$OFFICIAL_PYTHONPATH")
fi
python3 bench/gpu_suite.py --out "$OUT/gpu_suite.json" --budget-s "$BUDGET" "${official[@]}" "$@" 2>&1 \
  | tee "$OUT/gpu_suite.log"
