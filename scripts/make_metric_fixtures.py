#!/usr/bin/env python3
"""Regenerates crates/daa-train/tests/data/metric_*.png and metrics_golden.json.

Golden PSNR/SSIM values come from scikit-image (pip install scikit-image==0.26.0 pillow),
with the conventions daa uses (BasicSR's): 0..255 scale, SSIM with an 11x11 Gaussian window of
sigma 1.5 and population covariance, Y = BT.601 (skimage.color.rgb2ycbcr), optional border crop.

    python3 scripts/make_metric_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "daa-train" / "tests" / "data"


def ssim(a, b, channel_axis):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=channel_axis)


def y(img):
    return rgb2ycbcr(img.astype(np.uint8))[..., 0]  # float, 16..235, not rounded


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ref = np.asarray(Image.open(ROOT / "datasets/photos/test/monarch.png").convert("RGB"))[40:88, 100:164]
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(ref + rng.normal(0, 20, ref.shape)), 0, 255).astype(np.uint8)
    shifted = np.clip(ref.astype(np.int32) + 9, 0, 255).astype(np.uint8)
    Image.fromarray(ref).save(OUT / "metric_ref.png")
    Image.fromarray(noisy).save(OUT / "metric_noisy.png")
    Image.fromarray(shifted).save(OUT / "metric_shifted.png")
    cases = []
    for name, img in [("noisy", noisy), ("shifted", shifted)]:
        for border in [0, 4]:
            s = (slice(border, ref.shape[0] - border), slice(border, ref.shape[1] - border))
            a, b = ref[s].astype(np.float64), img[s].astype(np.float64)
            ya, yb = y(ref)[s], y(img)[s]
            cases.append({
                "image": f"metric_{name}.png",
                "crop_border": border,
                "psnr_rgb": peak_signal_noise_ratio(a, b, data_range=255),
                "ssim_rgb": ssim(a, b, 2),
                "psnr_y": peak_signal_noise_ratio(ya, yb, data_range=255),
                "ssim_y": ssim(ya, yb, None),
            })
    (OUT / "metrics_golden.json").write_text(json.dumps(cases, indent=2) + "\n")
    print(json.dumps(cases, indent=2))


if __name__ == "__main__":
    main()
