#!/usr/bin/env python3
"""Regenerates crates/daa-degrade/tests/data/: small image files that exercise decoding paths.

    pip install pillow numpy
    python3 scripts/make_io_fixtures.py

- palette.png: 8-bit palette (P mode) PNG, 6x4, with transparency in the palette.
- exif_rot90.jpg: a 6x4 JPEG, left half red and right half blue, whose EXIF orientation tag is
  6 (rotate 90 degrees clockwise on display): a correct reader returns a 4x6 image, red on top.
- gray16.png: 16-bit grayscale PNG, 5x3, values 0..65535.
- huge_header.png: a PNG whose IHDR announces 20000x20000 pixels, with a few bytes of data;
  a reader must refuse it from the header, before allocating.
- one_pixel.png: 1x1 RGB.
"""
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "crates" / "daa-degrade" / "tests" / "data"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pal = Image.new("P", (6, 4))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([i % 3 for i in range(24)])
    pal.info["transparency"] = 1
    pal.save(OUT / "palette.png", transparency=1)

    arr = np.zeros((4, 6, 3), np.uint8)
    arr[:, :3] = (255, 0, 0)  # stored left half red
    arr[:, 3:] = (0, 0, 255)  # stored right half blue
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(OUT / "exif_rot90.jpg", quality=100, exif=exif.tobytes())

    g = (np.arange(15, dtype=np.uint32).reshape(3, 5) * 4681).astype(np.uint16)
    Image.fromarray(g).save(OUT / "gray16.png")

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))  # far too little data for the size
    (OUT / "huge_header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b""))

    Image.new("RGB", (1, 1), (10, 200, 30)).save(OUT / "one_pixel.png")
    print(f"wrote fixtures to {OUT}")


if __name__ == "__main__":
    main()
