"""Makes official_hed_map.npy: the HED annotator's own code (`controlnet_aux.hed`, the Apache-2.0 HED that
`ControlNetHED.pth` belongs to) run on seeded stand-in weights and a test picture. Run it in a scratch environment
that has controlnet-aux (installed with --no-deps beside torch, opencv, einops, huggingface_hub):

    PYTHONPATH=. python tests/data/hed_reference/make_reference.py

It also checks that our HEDNet's state dict loads strictly into the official `ControlNetHED_Apache2`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

from tests.unit.hed_seeded import annotator_picture, seeded_hed_state

net = ControlNetHED_Apache2()
net.load_state_dict(seeded_hed_state(), strict=True)  # same names and shapes as the released file's class
picture = annotator_picture()
height, width = picture.shape[:2]
detector = HEDdetector(net.float().eval())
# detect/image resolution = the picture's short side: resize_image keeps the size, no resampling on either side
edge = detector(picture, detect_resolution=min(height, width), image_resolution=min(height, width), output_type="np")
assert edge.shape == (height, width, 3) and (edge[..., 0] == edge[..., 2]).all()
np.save(Path(__file__).with_name("official_hed_map.npy"), edge[..., 0])
print("levels", np.unique(edge[..., 0]).size, "mean", edge[..., 0].mean())
