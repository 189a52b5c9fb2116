"""Our DreamSim ensemble against the `dreamsim` package itself, on shared random full-size weights
(tests/data/dreamsim/README.md), and our preprocessing against the package's PIL path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from src.eval.dreamsim import dreamsim_preprocess, load_dreamsim_ensemble
from src.eval.pic import PerceptualInputConformity
from tests.unit.dreamsim_reference import REFERENCE_DIR, shared_random_images, write_random_dreamsim_folder


def test_preprocessing_is_the_packages_pil_bicubic_resize():
    images = shared_random_images(count=2, height=50, width=70)
    package = transforms.Compose(
        [transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC), transforms.ToTensor()]
    )
    expected = torch.stack([package(Image.fromarray(image.numpy())) for image in images])
    got = dreamsim_preprocess(images.permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.slow  # writes and loads three random ViT-B/16 (about 1 GB): 4 min on a loaded 2-core box
def test_ensemble_equals_the_dreamsim_package(tmp_path):
    reference = np.load(REFERENCE_DIR / "package_embeddings.npz")
    ensemble = load_dreamsim_ensemble(write_random_dreamsim_folder(tmp_path))
    images = shared_random_images().permute(0, 3, 1, 2).float() / 255
    embeddings = ensemble(images).numpy()
    np.testing.assert_allclose(embeddings, reference["embeddings"], rtol=0, atol=1e-6)  # measured 7.5e-8
    distances = [float(ensemble.distance(images[:1], images[i : i + 1])) for i in (1, 2)]
    np.testing.assert_allclose(distances, reference["distances"], rtol=0, atol=1e-6)
    metric = PerceptualInputConformity(embedder=ensemble)  # PIC = mean over frames of 1 - DreamSim distance
    metric.update(images[None, 1:], images[:1])
    assert float(metric.compute()) == pytest.approx(1 - float(np.mean(reference["distances"])), abs=1e-6)
