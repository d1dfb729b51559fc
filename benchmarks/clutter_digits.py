"""Cluttered digits: a harder, project-made variant of scikit-learn's bundled digits.

On plain digits every MobileNet width in the benchmarks scores 0.986-0.997, so one or two
test images decide whether NetAdapt beats the width baseline. This data set keeps digits'
1797 real images and labels but makes each one harder to read: the 8x8 digit is enlarged to
14-22 px, rotated by up to 25 degrees, placed anywhere on a 32x32 canvas at a random
contrast, then crossed by random strokes and covered in noise. It is one image per source
digit, so edgekit's split (train / validation / test) keeps every handwritten digit on one
side; the strokes are drawn, not cut from other digits, so nothing of a test digit reaches
the training images. Deterministic for a seed; nothing is downloaded.

    python benchmarks/clutter_digits.py [--out clutter_digits.npz] [--seed 0]

then pass the file to the NetAdapt benchmark (``--data clutter_digits.npz``) or to any
edgekit command's ``--data``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CANVAS = 32
SIZE_RANGE = (14.0, 22.0)  # the digit's enlarged side, pixels
MAX_ROTATION = 25.0  # degrees either way
CONTRAST_RANGE = (0.55, 1.0)
STROKES_RANGE = (2, 5)  # strokes per image, inclusive
STROKE_LENGTH = (6.0, 18.0)
STROKE_WIDTH = (0.8, 2.0)
STROKE_LEVEL = (0.35, 0.9)
NOISE = 0.12


def place_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 digit (values 0-1) enlarged, rotated and placed on a CANVAS x CANVAS image."""
    from scipy.ndimage import affine_transform

    side = rng.uniform(*SIZE_RANGE)
    scale = side / 8.0
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    # The rotated square's half-extent decides where its centre may go and still fit.
    half = side / 2.0 * (abs(np.cos(angle)) + abs(np.sin(angle)))
    low, high = half, CANVAS - half
    centre = rng.uniform(low, high, size=2) if high > low else np.full(2, CANVAS / 2.0)
    cos, sin = np.cos(angle), np.sin(angle)
    # affine_transform maps each output (canvas) pixel back to a source pixel.
    matrix = np.array([[cos, sin], [-sin, cos]]) / scale
    source_centre = np.array([3.5, 3.5])
    offset = source_centre - matrix @ (centre - 0.5)
    placed = affine_transform(
        digit, matrix, offset=offset, output_shape=(CANVAS, CANVAS), order=1, cval=0.0
    )
    return np.clip(placed, 0.0, 1.0) * rng.uniform(*CONTRAST_RANGE)


def strokes(rng: np.random.Generator) -> np.ndarray:
    """A CANVAS x CANVAS image of a few random anti-aliased line segments."""
    rows, cols = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float64) + 0.5
    out = np.zeros((CANVAS, CANVAS))
    for _ in range(rng.integers(STROKES_RANGE[0], STROKES_RANGE[1] + 1)):
        start = rng.uniform(0, CANVAS, size=2)
        angle = rng.uniform(0, np.pi)
        end = start + rng.uniform(*STROKE_LENGTH) * np.array([np.sin(angle), np.cos(angle)])
        d = end - start
        # Distance of every pixel centre to the segment.
        t = ((rows - start[0]) * d[0] + (cols - start[1]) * d[1]) / float(d @ d)
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(rows - (start[0] + t * d[0]), cols - (start[1] + t * d[1]))
        width = rng.uniform(*STROKE_WIDTH)
        ink = np.clip(width / 2.0 + 0.5 - dist, 0.0, 1.0) * rng.uniform(*STROKE_LEVEL)
        out = np.maximum(out, ink)
    return out


def make(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, CANVAS, CANVAS) uint8 and labels (1797,) int64, the same for a seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    images = np.empty((len(bunch.target), CANVAS, CANVAS), dtype=np.uint8)
    for i, digit in enumerate(bunch.images.astype(np.float64) / 16.0):
        img = np.maximum(place_digit(digit, rng), strokes(rng))
        img = np.clip(img + rng.normal(0.0, NOISE, size=img.shape), 0.0, 1.0)
        images[i] = np.round(img * 255.0).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def about(seed: int) -> str:
    """One line on how the file was made, for reports that use it."""
    return (
        f"scikit-learn's digits cluttered by benchmarks/clutter_digits.py --seed {seed}: each "
        f"digit enlarged to {SIZE_RANGE[0]:g}-{SIZE_RANGE[1]:g} px, rotated up to "
        f"{MAX_ROTATION:g} degrees, placed at random on {CANVAS}x{CANVAS} at "
        f"{CONTRAST_RANGE[0]:g}-{CONTRAST_RANGE[1]:g} contrast, with {STROKES_RANGE[0]}-"
        f"{STROKES_RANGE[1]} random strokes and noise of sd {NOISE:g}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("clutter_digits.npz"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, y = make(args.seed)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y, about=np.array(about(args.seed)))
    tmp.replace(args.out)
    print(f"{args.out}: {len(y)} images {x.shape[1]}x{x.shape[2]}, {len(set(y.tolist()))} classes")


if __name__ == "__main__":
    main()
