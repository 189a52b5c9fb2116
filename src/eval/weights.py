"""Local pretrained-file lookup for the evaluation metrics (the project's one helper, under the metrics' name).

Nothing is downloaded at run time: every metric takes the path of its pretrained file from config and
calls `require_weight_file` first, so a missing file fails early with the file, the config key that sets
it and where such a file is published. Works for files and folders (DreamSim's checkpoint is a folder).
"""

from __future__ import annotations

from src.models.weights import MissingWeightFileError
from src.models.weights import require_file as require_weight_file

__all__ = ["MissingWeightFileError", "require_weight_file"]
