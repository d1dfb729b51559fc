"""Pruning sensitivity analysis: how much each layer alone can be pruned.

:func:`sensitivity_analysis` prunes one layer at a time to each sparsity level with the level
pruner (its smallest-magnitude weights, no fine-tune), measures top-1 accuracy on a split and
puts the layer's weights back, giving an accuracy-versus-sparsity curve per layer (Han et
al. 2015; Distiller's "sensitivity analysis"). :func:`choose_s` turns the curves into the
``s`` of the sensitivity pruner (:func:`edgekit.compress.pruning.prune_sensitivity`), and
:func:`plot_sensitivity` draws them.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compress.pruning import dense_std, kernel_of, level_prune_array, select_prunable
from edgekit.data import Dataset
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SPLITS = ("val", "test")
_EVAL_BATCH = 256


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's curve.

    Attributes:
        name: the layer name.
        kind: its class (``Conv2D``, ``DepthwiseConv2D``, ``GroupConv2D``, ``Dense``).
        weights: kernel elements.
        std: population standard deviation of the kernel's non-zero weights (``σ_l``).
        accuracy: top-1 accuracy with only this layer pruned, one per level.
        thresholds: the largest magnitude the level pruner zeroed, one per level.
    """

    name: str
    kind: str
    weights: int
    std: float
    accuracy: tuple[float, ...]
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class SensitivityResult:
    """Accuracy versus sparsity, per layer, and the unpruned baseline."""

    split: str
    baseline: float
    levels: tuple[float, ...]
    layers: dict[str, LayerSensitivity]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "split": self.split,
            "baseline": self.baseline,
            "levels": list(self.levels),
            "layers": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "weights": r.weights,
                    "std": r.std,
                    "accuracy": list(r.accuracy),
                    "thresholds": list(r.thresholds),
                }
                for r in self.layers.values()
            ],
        }


@dataclass(frozen=True)
class SChoice:
    """The sensitivity pruner's ``s`` suggested by :func:`choose_s`.

    Attributes:
        s: the median of ``per_layer`` (one ``s`` for :func:`prune_sensitivity`).
        per_layer: each layer's own ``s``: the threshold reaching ``sparsity[layer]``
            divided by the layer's ``σ``.
        sparsity: each layer's largest tested level within ``max_drop`` (0.0 if none).
        max_drop: the allowed drop, in accuracy points.
    """

    s: float
    per_layer: dict[str, float]
    sparsity: dict[str, float]
    max_drop: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "s": self.s,
            "max_drop": self.max_drop,
            "per_layer": dict(self.per_layer),
            "sparsity": dict(self.sparsity),
        }


def check_levels(levels: Any) -> tuple[float, ...]:
    """Distinct sparsity levels strictly between 0 and 1, sorted.

    Raises:
        BadInputError: empty, not numbers, out of (0, 1), or repeated.
    """
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence) or not levels:
        raise BadInputError(f"levels must be a non-empty list of numbers in (0, 1); got {levels!r}")
    out = []
    for v in levels:
        ok = isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < 1
        if not ok:
            raise BadInputError(
                f"sparsity level {v!r} is not allowed; each level must be a number strictly "
                "between 0 and 1 (0.5 = half the weights zeroed)"
            )
        out.append(float(v))
    if len(set(out)) != len(out):
        raise BadInputError(f"sparsity levels repeat: {', '.join(f'{v:g}' for v in out)}")
    return tuple(sorted(out))


def _accuracy_fn(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    """Top-1 accuracy of ``model`` on (x, y) with its current weights, traced once."""
    from edgekit._keras import tf

    spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)

    @tf.function(input_signature=[spec])
    def predict(batch: Any) -> Any:
        return tf.argmax(model(batch, training=False), axis=-1)

    batches = [tf.constant(x[i : i + _EVAL_BATCH]) for i in range(0, len(x), _EVAL_BATCH)]

    def accuracy() -> float:
        pred = np.concatenate([predict(b).numpy() for b in batches])
        return float(np.mean(pred == y))

    return accuracy


def sensitivity_analysis(
    model: Any,
    data: Dataset,
    levels: Sequence[float] = DEFAULT_LEVELS,
    split: str = "val",
    *,
    layers: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SensitivityResult:
    """Prune each layer alone to each level and measure top-1 accuracy.

    Each trial zeroes the ``round(level * size)`` smallest-magnitude weights of one kernel
    (:func:`edgekit.compress.pruning.level_prune_array`), evaluates in inference mode and
    restores the original kernel, so one model serves every trial and is left as it was.

    Args:
        model: a ``tf_keras`` classifier whose input matches ``data``.
        data: the split data set.
        levels: sparsity levels, each in (0, 1).
        split: ``"val"`` (default: keeps the test split for the final report) or ``"test"``.
        layers: only these layers; default: every conv, depthwise and dense layer.
        progress: receives one line per layer.

    Returns:
        The baseline accuracy and each layer's curve, in model order.

    Raises:
        BadInputError: bad levels, an unknown split or an empty one, a layer name that is
            not a prunable layer, or a model whose classes do not match the data.
    """
    grid = check_levels(levels)
    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    if len(x) == 0:
        raise BadInputError(f"the {split} split of data '{data.name}' is empty")
    classes = int(model.outputs[0].shape[-1])
    if classes != data.num_classes:
        raise BadInputError(
            f"model '{model.name}' has {classes} outputs but data '{data.name}' has "
            f"{data.num_classes} classes; pass the data set the model was trained on"
        )
    chosen = select_prunable(model, layers)
    accuracy = _accuracy_fn(model, x, y)
    baseline = accuracy()
    say = progress or (lambda _m: None)
    say(f"baseline {split} accuracy {baseline:.4f} on {len(y)} images; {len(chosen)} layers")
    out: dict[str, LayerSensitivity] = {}
    for i, layer in enumerate(chosen, start=1):
        kernel = kernel_of(layer)
        original = kernel.numpy()
        accs, thresholds = [], []
        try:
            for level in grid:
                pruned, threshold = level_prune_array(original, level)
                kernel.assign(pruned)
                accs.append(accuracy())
                thresholds.append(threshold)
        finally:
            kernel.assign(original)
        out[layer.name] = LayerSensitivity(
            name=layer.name,
            kind=type(layer).__name__,
            weights=int(original.size),
            std=dense_std(original),
            accuracy=tuple(accs),
            thresholds=tuple(thresholds),
        )
        say(f"[{i}/{len(chosen)}] {layer.name}: accuracy at {grid[-1]:g} = {accs[-1]:.4f}")
        log.debug("sensitivity %s: %s", layer.name, accs)
    return SensitivityResult(split=split, baseline=baseline, levels=grid, layers=out)


def choose_s(result: SensitivityResult, max_drop: float = 1.0) -> SChoice:
    """Suggest the sensitivity pruner's ``s`` from a sensitivity scan.

    For each layer, the largest tested level L such that every level up to L keeps the
    accuracy within ``max_drop`` points of the baseline (a curve that dips and recovers
    does not count past the dip). Its ``s_l`` is the level pruner's threshold at L divided
    by ``σ_l``, so ``prune_sensitivity(model, s_l)`` prunes that layer at least to L. A
    layer with no such level gets ``s_l = 0``. The suggested single ``s`` is the median of
    the ``s_l``: half the layers are pruned more than they tolerated alone, half less. The
    drops were measured one layer at a time; pruning all layers together drops more, so
    fine-tune after pruning.

    Args:
        result: from :func:`sensitivity_analysis`.
        max_drop: allowed accuracy drop in points (1.0 = one percentage point), 0..100.

    Raises:
        BadInputError: ``max_drop`` out of range, or a result without layers.
    """
    ok = isinstance(max_drop, Real) and not isinstance(max_drop, bool) and 0 <= max_drop <= 100
    if not ok:
        raise BadInputError(f"max_drop must be 0..100 accuracy points; got {max_drop!r}")
    if not result.layers:
        raise BadInputError("the sensitivity result has no layers to choose s from")
    per_layer: dict[str, float] = {}
    sparsity: dict[str, float] = {}
    for name, row in result.layers.items():
        best = -1
        for i, acc in enumerate(row.accuracy):
            if (result.baseline - acc) * 100.0 > max_drop + 1e-9:
                break
            best = i
        sparsity[name] = result.levels[best] if best >= 0 else 0.0
        per_layer[name] = _s_reaching(row.thresholds[best], row.std) if best >= 0 else 0.0
    s = float(np.median(list(per_layer.values())))
    return SChoice(s=s, per_layer=per_layer, sparsity=sparsity, max_drop=float(max_drop))


def _s_reaching(threshold: float, std: float) -> float:
    """The smallest ``s`` with ``s * std >= threshold`` (a plain division can round below)."""
    if std <= 0 or threshold <= 0:
        return 0.0
    s = threshold / std
    while s * std < threshold:
        s = float(np.nextafter(s, np.inf))
    return float(s)


def plot_sensitivity(result: SensitivityResult, path: str | Path, title: str | None = None) -> Path:
    """Draw accuracy versus sparsity, one line per layer, the baseline dashed; write a PNG.

    The file is written atomically (a reader never sees half a PNG); missing parent folders
    are created.

    Returns:
        The path written.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edgekit._io import write_bytes_atomic

    path = Path(path)
    fig = Figure(figsize=(9, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [0.0, *result.levels]
    cmap = matplotlib.colormaps["tab20"]
    styles = ("-", "--", ":", "-.")
    for i, row in enumerate(result.layers.values()):
        ax.plot(
            xs,
            [result.baseline, *row.accuracy],
            linestyle=styles[(i // 20) % len(styles)],
            marker="o",
            markersize=3,
            linewidth=1.2,
            color=cmap(i % 20),
            label=row.name,
        )
    ax.axhline(
        result.baseline, color="black", linestyle="--", linewidth=1.5, label="baseline (unpruned)"
    )
    ax.set_xlabel("sparsity of the one pruned layer (level pruner, no fine-tune)")
    ax.set_ylabel(f"top-1 accuracy ({result.split})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "pruning sensitivity per layer")
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=1 + len(result.layers) // 30
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, buf.getvalue())
