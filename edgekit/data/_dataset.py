"""Data sets: the bundled digits, an image folder, or an .npz; deterministic splits."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_SEED = 1234
VAL_FRACTION = 0.15
TEST_FRACTION = 0.2


@dataclass
class Dataset:
    """A classification data set, split into train / validation / test.

    Images are float32 in [0, 1], shaped (N, H, W, C) at the model's input size; labels are
    int64 class indices.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "classes": self.num_classes,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
        }


def representative_data(x: np.ndarray, count: int = 200) -> Iterator[list[np.ndarray]]:
    """Yield single-sample batches for post-training quantization calibration.

    Args:
        x: images (N, H, W, C), float32; normally the training split.
        count: how many samples to yield at most (evenly spaced over ``x``).
    """
    if len(x) == 0:
        raise DataError("no calibration samples: the representative data set is empty")
    idx = np.linspace(0, len(x) - 1, num=min(count, len(x))).round().astype(int)
    for i in idx:
        yield [x[i : i + 1].astype(np.float32)]


def load_dataset(source: str | Path, input_shape: tuple[int, int, int] | None = None) -> Dataset:
    """Load a data set and split it deterministically.

    Args:
        source: ``"digits"`` (scikit-learn's bundled handwritten digits), a folder with one
            sub-folder of images per class, or an ``.npz`` file with arrays ``x`` (N, H, W[, C])
            and ``y`` (N,) of integer labels.
        input_shape: (H, W, C) to resize the images to; None keeps their size (digits: 32x32x3).

    Returns:
        The split data set.

    Raises:
        DataError: the source is missing, empty or malformed.
    """
    src = str(source)
    if src == "digits":
        x, y, names = _load_digits()
        name = "digits"
    else:
        path = Path(src)
        if not path.exists():
            raise DataError(
                f"data '{src}' does not exist; pass --data digits, a folder with one "
                "sub-folder of images per class, or an .npz file with arrays x and y"
            )
        if path.is_dir():
            x, y, names = _load_folder(path)
        elif path.suffix == ".npz":
            x, y, names = _load_npz(path)
        else:
            raise DataError(
                f"data '{src}' is neither a folder nor an .npz file; pass --data digits, "
                "a folder with one sub-folder of images per class, or an .npz with x and y"
            )
        name = path.name
    target = input_shape or (32, 32, 3)
    x = _fit_images(x, target)
    return _split(name, x, y, names)


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = bunch.target.astype(np.int64)
    return x, y, [str(int(c)) for c in bunch.target_names]


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(
                    f"data '{path}' has arrays {sorted(z.files)} but no {' or '.join(missing)}; "
                    "save it with np.savez(path, x=images, y=labels)"
                )
            x = np.asarray(z["x"])
            y = np.asarray(z["y"])
    except DataError:
        raise
    except Exception as err:  # zip / format errors from numpy
        raise DataError(f"data '{path}' is not a readable .npz file ({err})") from err
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(
            f"data '{path}': x has shape {x.shape}; expected (N, H, W) or (N, H, W, 1|3)"
        )
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"data '{path}': y has shape {y.shape} and dtype {y.dtype}; expected {len(x)} "
            "integer labels"
        )
    x = x.astype(np.float32)
    if x.max(initial=0.0) > 1.0:
        x = x / 255.0
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"data '{path}' has {len(classes)} class; at least 2 are needed")
    remap = {int(c): i for i, c in enumerate(classes)}
    y = np.array([remap[int(v)] for v in y], dtype=np.int64)
    return x, y, [str(int(c)) for c in classes]


def _load_folder(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            f"data folder '{path}' has {len(class_dirs)} class sub-folder(s); it needs at least "
            "2, one per class, each holding that class's images"
        )
    from edgekit._keras import tf

    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"class folder '{class_dir}' has no images ({', '.join(IMAGE_SUFFIXES)}); "
                "put each class's images in its own sub-folder"
            )
        for f in files:
            try:
                img = tf.io.decode_image(f.read_bytes(), channels=3, expand_animations=False)
            except Exception as err:
                raise DataError(f"image '{f}' cannot be decoded ({type(err).__name__})") from err
            images.append(np.asarray(img, dtype=np.float32) / 255.0)
            labels.append(label)
    shapes = {im.shape[:2] for im in images}
    if len(shapes) > 1:
        # Different sizes: resize each to the most common size first so they stack.
        target = max(shapes, key=lambda s: sum(im.shape[:2] == s for im in images))
        images = [_resize(im[None], (*target, 3))[0] for im in images]
    return np.stack(images), np.array(labels, dtype=np.int64), [d.name for d in class_dirs]


def _resize(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    from edgekit._keras import tf

    return tf.image.resize(x, shape[:2], method="bilinear", antialias=True).numpy()


def _fit_images(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    h, w, c = shape
    if c not in (1, 3):
        raise DataError(f"model input has {c} channels; edgekit data sets give 1 or 3")
    if x.shape[1:3] != (h, w):
        x = _resize(x, shape)
    if x.shape[-1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 3 and c == 1:
        x = x.mean(axis=-1, keepdims=True)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _split(name: str, x: np.ndarray, y: np.ndarray, names: list[str]) -> Dataset:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 3:
        worst = names[int(counts.argmin())]
        raise DataError(
            f"class '{worst}' of data '{name}' has {int(counts.min())} sample(s); each class needs "
            "at least 3 (train, validation and test)"
        )
    n_test = max(round(len(y) * TEST_FRACTION), len(names))
    n_val = max(round(len(y) * VAL_FRACTION), len(names))
    stratify = y if counts.min() >= 5 else None
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, random_state=SPLIT_SEED, stratify=stratify
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=n_val,
        random_state=SPLIT_SEED,
        stratify=y_rest if stratify is not None else None,
    )
    log.info("data %s: %d train, %d val, %d test", name, len(y_train), len(y_val), len(y_test))
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, list(names))
