#!/usr/bin/env python3
"""Counts the items of the reference's denoising training list, to set the lambda ramp.

The reference's epoch is one pass over a list of pre-cut crops (its patch script for the
denoising set): an image whose two sides both exceed 800 px is cut into 512 x 512 crops on a
grid of stride 416 (overlap 96) with the last crop flush with the far border; any other image
stays one item. Its lambda ramp reaches full weight after 300 such epochs (docs/method.md).
Given the folders of the clean photos (DIV2K, Flickr2K, WED, BSD400 in the paper), this prints
the list length N and the ramp in samples, 300 N, that `lambda.ramp_samples` takes:

    pip install pillow
    python3 scripts/count_reference_crops.py ~/data/DIV2K ~/data/Flickr2K ~/data/WED ~/data/BSD400

Only image headers are read.
"""
import math
import sys
from pathlib import Path

from PIL import Image

PATCH, STRIDE, KEEP_WHOLE_AT_OR_BELOW = 512, 416, 800
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}


def crops_along(side):
    """Crop origins along one side: 0, 416, ... below side - 512, then side - 512."""
    return math.ceil((side - PATCH) / STRIDE) + 1


def items(width, height):
    if width > KEEP_WHOLE_AT_OR_BELOW and height > KEEP_WHOLE_AT_OR_BELOW:
        return crops_along(width) * crops_along(height)
    return 1


def main(folders):
    if not folders:
        sys.exit(__doc__)
    total = 0
    for folder in map(Path, folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)
        n = 0
        for p in files:
            with Image.open(p) as im:
                n += items(*im.size)
        print(f"{folder}: {len(files)} images -> {n} items")
        total += n
    print(f"epoch: {total} items; ramp over 300 epochs: {300 * total} samples "
          f"({300 * total / 192:.0f} steps at batch 192)")


if __name__ == "__main__":
    assert crops_along(2040) == 5 and crops_along(1356) == 4 and crops_along(1152) == 3
    main(sys.argv[1:])
