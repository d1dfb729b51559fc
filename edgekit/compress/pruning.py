"""Weight pruning: zeros in the kernels, same model shape (unlike :mod:`channels`).

Two families:

* :func:`prune_tfmot` wraps the layers TF-MOT can prune in ``prune_low_magnitude``,
  fine-tunes so the masks follow a one-shot (``constant``) or gradual (``polynomial``)
  schedule, and strips the wrappers. Element, block (2-D kernels only) and 2:4 patterns.
* Three classic pruners in plain NumPy, no training needed (Han et al. 2015 and the
  Distiller names): :func:`prune_magnitude` (``|w| <= threshold``), :func:`prune_sensitivity`
  (``|w| <= s * std`` of each layer's non-zero weights) and :func:`prune_level` (each layer
  to a share of zeros). :func:`fine_tune_sparse` then trains with every zero held at zero.

The kernels considered are those of ``Conv2D`` (and subclasses such as edgekit's
``GroupConv2D``), ``DepthwiseConv2D`` and ``Dense``; biases and batch norms are never
pruned. Every function leaves the model it is given untouched and returns a new one.

The recipe step ``prune`` (:func:`prune_step`) runs either family.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, NamedTuple

import numpy as np

from edgekit.compress._steps import Option, StepContext, register_step
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

METHODS = ("tfmot", "magnitude", "sensitivity", "level")
SCHEDULES = ("constant", "polynomial")
GRANULARITIES = ("element", "block", "2:4")
NUMPY_METHODS = ("magnitude", "sensitivity", "level")
# Share of the fine-tune over which the polynomial schedule ramps up; the rest recovers at
# the final sparsity.
POLYNOMIAL_RAMP = 0.8
_M_BY_N = (2, 4)


@dataclass(frozen=True)
class LayerPruning:
    """What pruning did to one layer's kernel.

    Attributes:
        name: the layer name.
        kind: the layer class (``Conv2D``, ``GroupConv2D``, ``DepthwiseConv2D``, ``Dense``).
        weights: kernel elements.
        zeros: exact zeros in the kernel after pruning.
        threshold: magnitudes at or below it were pruned (the level pruner: the largest
            magnitude it pruned; 0.0 when it pruned nothing); None for TF-MOT.
    """

    name: str
    kind: str
    weights: int
    zeros: int
    threshold: float | None

    @property
    def sparsity(self) -> float:
        """Share of exact zeros in the kernel."""
        return self.zeros / self.weights if self.weights else 0.0


class PruneResult(NamedTuple):
    """The pruned model and, by layer name, what was done to each pruned layer."""

    model: Any
    layers: dict[str, LayerPruning]


# --------------------------------------------------------------------------- kernels


def kernel_of(layer: Any) -> Any | None:
    """The prunable kernel variable of ``layer``, or None if it has none.

    ``Conv2D`` and its subclasses (``GroupConv2D``, ``Conv2DTranspose``) and ``Dense``:
    ``kernel``; ``DepthwiseConv2D``: ``depthwise_kernel``.
    """
    from edgekit._keras import keras

    if not getattr(layer, "built", False):
        return None
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.depthwise_kernel
    if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
        return layer.kernel
    return None


def prunable_layers(model: Any) -> list[str]:
    """Names of the layers of ``model`` with a prunable kernel, in model order."""
    return [layer.name for layer in model.layers if kernel_of(layer) is not None]


def weight_sparsity(model: Any) -> dict[str, Any]:
    """Exact zeros in the kernels of ``model`` (biases and batch norms excluded).

    Kernels are found by variable name (``kernel``, ``depthwise_kernel``), so a layer inside
    a TF-MOT wrapper (quantization-aware, pruning) is counted like a bare one.

    Returns:
        ``{"overall": share, "weights": n, "zeros": z, "layers": {name: {"kind", "weights",
        "zeros", "sparsity"}}}``; ``overall`` counts every kernel element of every layer.
    """
    layers: dict[str, dict[str, Any]] = {}
    total = zeros = 0
    for layer in model.layers:
        n = z = 0
        for w in layer.weights:
            if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel"):
                values = np.asarray(w.numpy())
                n, z = n + int(values.size), z + int(np.count_nonzero(values == 0))
        if n == 0:
            continue
        total, zeros = total + n, zeros + z
        inner = getattr(layer, "layer", layer)  # a wrapper's layer
        layers[layer.name] = {
            "kind": type(inner).__name__,
            "weights": n,
            "zeros": z,
            "sparsity": z / n,
        }
    return {
        "overall": zeros / total if total else 0.0,
        "weights": total,
        "zeros": zeros,
        "layers": layers,
    }


def select_prunable(model: Any, layers: Sequence[str] | None) -> list[Any]:
    """The layers to prune: every layer with a prunable kernel, or the named ones.

    Raises:
        BadInputError: ``layers`` is empty or names a layer that is missing or has no
            conv / depthwise / dense kernel; the message lists the prunable layers.
    """
    candidates = {layer.name: layer for layer in model.layers if kernel_of(layer) is not None}
    if layers is None:
        return list(candidates.values())
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise BadInputError(f"layers must be a non-empty list of layer names; got {layers!r}")
    chosen = []
    for name in dict.fromkeys(layers):
        if name not in candidates:
            names = list(candidates)
            shown = ", ".join(names[:12]) + (
                f", ... ({len(names)} layers)" if len(names) > 12 else ""
            )
            what = (
                "has no conv or dense kernel" if _has_layer(model, name) else "is not in the model"
            )
            raise BadInputError(
                f"layer {name!r} {what}; prunable layers (conv, depthwise, dense): {shown}"
            )
        chosen.append(candidates[name])
    return chosen


def _has_layer(model: Any, name: Any) -> bool:
    return any(layer.name == name for layer in model.layers)


def _copy_model(model: Any) -> Any:
    from edgekit._keras import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _report(layer: Any, threshold: float | None) -> LayerPruning:
    values = kernel_of(layer).numpy()
    return LayerPruning(
        name=layer.name,
        kind=type(layer).__name__,
        weights=int(values.size),
        zeros=int(np.count_nonzero(values == 0)),
        threshold=threshold,
    )


# --------------------------------------------------------------------------- NumPy pruners


def threshold_prune_array(kernel: np.ndarray, threshold: float) -> np.ndarray:
    """``kernel`` with every weight of magnitude ``<= threshold`` set to zero."""
    return np.where(np.abs(kernel) <= threshold, np.zeros_like(kernel), kernel)


def level_prune_array(kernel: np.ndarray, sparsity: float) -> tuple[np.ndarray, float]:
    """Zero the ``round(sparsity * size)`` smallest-magnitude weights of ``kernel``.

    Ties at the cut are broken by position (a stable sort), so exactly that many weights are
    zeroed and the share of zeros is within one weight of ``sparsity`` (more only if the
    kernel already held more zeros).

    Returns:
        The pruned kernel and the largest magnitude pruned (0.0 when none).
    """
    flat = kernel.reshape(-1)
    k = min(flat.size, math.floor(sparsity * flat.size + 0.5))
    if k == 0:
        return kernel.copy(), 0.0
    order = np.argsort(np.abs(flat), kind="stable")
    out = flat.copy()
    out[order[:k]] = 0
    return out.reshape(kernel.shape), float(np.abs(flat[order[k - 1]]))


def dense_std(kernel: np.ndarray) -> float:
    """Standard deviation (population, ddof 0) of the non-zero weights of ``kernel``."""
    nonzero = kernel[kernel != 0]
    return float(np.std(nonzero.astype(np.float64))) if nonzero.size else 0.0


def _check_number(name: str, value: Any, low: float, high: float | None = None) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise BadInputError(f"{name} must be a number {bounds}; got {value!r}")
    return float(value)


def prune_magnitude(
    model: Any, threshold: float, *, layers: Sequence[str] | None = None
) -> PruneResult:
    """Zero every kernel weight with ``|w| <= threshold``.

    Args:
        model: a ``tf_keras`` model; it is not modified.
        threshold: the magnitude λ at or below which weights are zeroed, >= 0.
        layers: prune only these layers; default: every conv, depthwise and dense layer.

    Returns:
        The pruned copy and a :class:`LayerPruning` per pruned layer (threshold λ).

    Raises:
        BadInputError: a negative threshold, or a layer name that is not a prunable layer.
    """
    lam = _check_number("threshold", threshold, 0.0)
    out = _copy_model(model)
    report = {}
    for layer in select_prunable(out, layers):
        kernel = kernel_of(layer)
        kernel.assign(threshold_prune_array(kernel.numpy(), lam))
        report[layer.name] = _report(layer, lam)
    return PruneResult(out, report)


def prune_sensitivity(model: Any, s: float, *, layers: Sequence[str] | None = None) -> PruneResult:
    """Zero, in each layer, the weights with ``|w| <= s * std`` of that layer's weights.

    The threshold of layer l is ``s * σ_l`` with ``σ_l`` the population standard deviation
    of the layer's non-zero kernel weights (Han et al., "Learning both weights and
    connections"): one ``s`` prunes each layer in proportion to its own spread.
    :func:`edgekit.compress.sensitivity.choose_s` suggests ``s`` from a sensitivity scan.

    Args:
        model: a ``tf_keras`` model; it is not modified.
        s: the multiple of each layer's standard deviation, >= 0.
        layers: prune only these layers; default: every conv, depthwise and dense layer.

    Returns:
        The pruned copy and a :class:`LayerPruning` per pruned layer (threshold ``s * σ_l``).

    Raises:
        BadInputError: a negative ``s``, or a layer name that is not a prunable layer.
    """
    s = _check_number("s", s, 0.0)
    out = _copy_model(model)
    report = {}
    for layer in select_prunable(out, layers):
        kernel = kernel_of(layer)
        values = kernel.numpy()
        lam = s * dense_std(values)
        kernel.assign(threshold_prune_array(values, lam))
        report[layer.name] = _report(layer, lam)
    return PruneResult(out, report)


def prune_level(
    model: Any,
    sparsity: float | Mapping[str, float],
    *,
    layers: Sequence[str] | None = None,
) -> PruneResult:
    """Prune each layer to a share of zeros: its smallest-magnitude weights.

    Args:
        model: a ``tf_keras`` model; it is not modified.
        sparsity: one share in [0, 1] for every pruned layer, or a mapping from layer name
            to its share (then only those layers are pruned).
        layers: with a single ``sparsity``, prune only these layers; default: every conv,
            depthwise and dense layer. Not allowed with a mapping.

    Returns:
        The pruned copy and a :class:`LayerPruning` per pruned layer; each layer's sparsity
        is its target to within one weight (see :func:`level_prune_array`).

    Raises:
        BadInputError: a share out of range, a mapping together with ``layers``, or a layer
            name that is not a prunable layer.
    """
    if isinstance(sparsity, Mapping):
        if layers is not None:
            raise BadInputError(
                "give either a sparsity per layer (a mapping) or layers with one sparsity, not both"
            )
        targets = {
            name: _check_number(f"sparsity of layer {name!r}", v, 0.0, 1.0)
            for name, v in sparsity.items()
        }
        names: Sequence[str] | None = list(targets)
        share = 0.0
    else:
        share = _check_number("sparsity", sparsity, 0.0, 1.0)
        targets = {}
        names = layers
    out = _copy_model(model)
    report = {}
    for layer in select_prunable(out, names):
        kernel = kernel_of(layer)
        pruned, lam = level_prune_array(kernel.numpy(), targets.get(layer.name, share))
        kernel.assign(pruned)
        report[layer.name] = _report(layer, lam)
    return PruneResult(out, report)


def sparsity_mask_callback(model: Any, layers: Sequence[str] | None = None) -> Any:
    """A Keras callback that keeps every exact zero of the prunable kernels at zero.

    The masks are taken from the kernels when the callback is made (a zero now stays zero);
    they are applied when training starts and after every batch, so each forward pass and
    the final weights see exact zeros. Any fine-tune of a pruned model (quantization-aware
    training, distillation) can pass it to keep the sparsity.

    Args:
        model: the model that will be trained (the callback holds its kernel variables).
        layers: only these layers' zeros; default: every prunable layer.
    """
    from edgekit._keras import keras, tf

    pairs = []
    for layer in select_prunable(model, layers):
        kernel = kernel_of(layer)
        pairs.append((kernel, tf.constant(kernel.numpy() != 0, dtype=kernel.dtype)))

    @tf.function
    def apply_masks() -> None:
        for kernel, mask in pairs:
            kernel.assign(kernel * mask)

    class KeepZeros(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_begin(self, logs: Any = None) -> None:
            apply_masks()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            apply_masks()

    return KeepZeros()


def fine_tune_sparse(
    model: Any, ctx: StepContext, epochs: int, learning_rate: float = 1e-3
) -> dict[str, list[float]]:
    """Fine-tune ``model`` in place on ``ctx.data`` with its kernel zeros held at zero.

    Returns:
        The Keras history dict (empty when ``epochs`` is 0).
    """
    if epochs <= 0:
        return {}
    return ctx.fine_tune(
        model, epochs, learning_rate=learning_rate, callbacks=[sparsity_mask_callback(model)]
    )


# --------------------------------------------------------------------------- TF-MOT


def _tfmot() -> Any:
    """The ``tensorflow_model_optimization`` module, imported after :mod:`edgekit._keras`
    (which selects tf_keras and quiets TensorFlow's start-up) and only when needed."""
    import importlib

    importlib.import_module("edgekit._keras")
    return importlib.import_module("tensorflow_model_optimization")


def _tfmot_problem(layer: Any, granularity: str) -> str | None:
    """Why TF-MOT cannot prune ``layer`` with ``granularity``, or None if it can."""
    tfmot = _tfmot()
    # The registry is not public API; it is what prune_low_magnitude consults (0.8.1).
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (
        PruneRegistry,
    )

    kind = type(layer).__name__
    custom = isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or hasattr(
        layer, "get_prunable_weights"
    )
    if not custom:
        if not PruneRegistry.supports(layer):
            return f"TF-MOT cannot wrap a {kind} (not in its layer registry, not a PrunableLayer)"
        if not PruneRegistry._LAYERS_WEIGHTS_MAP.get(type(layer)):
            return f"TF-MOT 0.8.1 wraps a {kind} but prunes none of its weights"
    rank = len(kernel_of(layer).shape)
    if granularity == "block" and rank != 2:
        return f"TF-MOT block sparsity needs a 2-D kernel; this {kind} kernel is {rank}-D"
    if granularity == "2:4":
        c_in = int(kernel_of(layer).shape[-2])
        if rank not in (2, 4) or c_in % _M_BY_N[1]:
            return (
                f"2:4 sparsity groups 4 consecutive input channels; this {kind} has {c_in} "
                "input channels, not a multiple of 4"
            )
    return None


def _tfmot_select(
    model: Any, granularity: str, layers: Sequence[str] | None
) -> tuple[list[str], dict[str, str]]:
    """Names of the layers to wrap, and the skipped prunable layers with the reason."""
    chosen, skipped = [], {}
    for layer in select_prunable(model, layers):
        problem = _tfmot_problem(layer, granularity)
        if problem is None:
            chosen.append(layer.name)
        elif layers is not None:
            raise BadInputError(
                f"layer {layer.name!r} cannot be pruned by method 'tfmot' with granularity "
                f"{granularity!r}: {problem}; remove it from layers, or prune it with method "
                "'level', 'magnitude' or 'sensitivity' (NumPy, any kernel)"
            )
        else:
            skipped[layer.name] = problem
    return chosen, skipped


def _schedule(
    tfmot: Any,
    granularity: str,
    schedule: str,
    sparsity: float,
    initial_sparsity: float,
    total_steps: int,
    steps_per_epoch: int,
    frequency: int | None,
) -> tuple[Any, str]:
    """The TF-MOT pruning schedule and a description of its steps.

    TF-MOT counts steps from 1 (the first training batch) and updates the masks at steps
    ``begin + k * frequency`` up to ``end``; its default ``frequency=100`` would never fire
    in a short fine-tune, so the steps come from the fine-tune's length.
    """
    sched = tfmot.sparsity.keras
    if granularity == "2:4":
        # TF-MOT sets 2:4 masks once, at step 1, whatever the schedule says.
        return sched.ConstantSparsity(0.5, begin_step=0, frequency=1), "2:4 masks set at step 1"
    if frequency is not None and frequency > total_steps:
        raise BadInputError(
            f"frequency {frequency} is more than the {total_steps} steps of the fine-tune "
            f"({steps_per_epoch} per epoch), so the masks would never be updated; give "
            f"frequency <= {total_steps} or more epochs"
        )
    if schedule == "constant":
        # One-shot: the target at the first step, masks re-chosen every `freq` steps.
        freq = frequency or steps_per_epoch
        return (
            sched.ConstantSparsity(sparsity, begin_step=1, end_step=total_steps, frequency=freq),
            f"constant {sparsity:g} from step 1, masks updated every {freq} steps",
        )
    ramp = max(1, round(POLYNOMIAL_RAMP * total_steps))
    freq = frequency or max(1, ramp // 10)
    end = max(freq, ramp // freq * freq)  # a mask update falls on end_step itself
    return (
        sched.PolynomialDecay(
            initial_sparsity=initial_sparsity,
            final_sparsity=sparsity,
            begin_step=0,
            end_step=end,
            frequency=freq,
        ),
        f"polynomial {initial_sparsity:g} -> {sparsity:g} over steps 0..{end} of "
        f"{total_steps}, every {freq} steps",
    )


def prune_tfmot(
    model: Any,
    ctx: StepContext,
    target_sparsity: float = 0.5,
    *,
    schedule: str = "constant",
    initial_sparsity: float = 0.0,
    epochs: int = 2,
    frequency: int | None = None,
    granularity: str = "element",
    block_size: Sequence[int] = (1, 4),
    learning_rate: float = 1e-3,
    layers: Sequence[str] | None = None,
) -> Any:
    """Prune with TF-MOT's ``prune_low_magnitude`` while fine-tuning, then strip the wrappers.

    ``constant`` prunes to the target at the first step (one-shot) and re-chooses the masks
    every ``frequency`` steps (default: once per epoch); ``polynomial`` ramps from
    ``initial_sparsity`` to the target over the first 80% of the fine-tune, updating the
    masks every ``frequency`` steps (default: a tenth of the ramp), and trains the rest at
    the target. Either way every wrapped kernel ends at the target sparsity. ``constant`` is
    the default: in the short fine-tunes of a recipe (a few epochs) it leaves the most
    training at the final masks and recovered more accuracy in our runs.

    ``granularity``: ``element``; ``block`` zeros whole ``block_size`` blocks and, in TF-MOT
    0.8.1, applies to 2-D kernels only (dense layers); ``2:4`` zeros 2 of every 4
    consecutive input-channel weights (what sparse tensor cores run; the target is 0.5)
    and applies to conv and dense layers whose input channels are a multiple of 4; TF-MOT
    sets its masks once, at the first step, so ``schedule``, ``initial_sparsity`` and
    ``frequency`` do not apply to it.

    Layers TF-MOT cannot prune (edgekit's ``GroupConv2D``; ``DepthwiseConv2D``, whose
    weights TF-MOT 0.8.1 does not prune; layers the granularity does not fit) are left dense
    with a ``ctx.note`` naming them, unless ``layers`` names them: then it is an error.

    Args:
        model: a functional or sequential ``tf_keras`` model; it is not modified.
        ctx: the step context (data, batch size, seed; notes and state are added).
        target_sparsity: share of zeros of each wrapped kernel, in [0, 0.99].
        schedule: ``"constant"`` or ``"polynomial"``.
        initial_sparsity: polynomial only: the share at the start of the ramp.
        epochs: fine-tuning epochs, >= 1 (TF-MOT prunes during training).
        frequency: training steps between mask updates; default from the steps per epoch.
        granularity: ``"element"``, ``"block"`` or ``"2:4"``.
        block_size: (height, width) of a block, for ``block``.
        learning_rate: fine-tuning learning rate.
        layers: prune only these layers; default: every layer TF-MOT can prune.

    Returns:
        The stripped model (plain Keras layers, same names) with sparse kernels.
        ``ctx.state["sparsity"]`` is the share of zeros over every prunable kernel,
        ``ctx.state["pruned"]`` is True, ``ctx.state["pruned_layers"]`` the wrapped layers
        and ``ctx.state["prune_granularity"]`` the pattern.

    Raises:
        BadInputError: an option out of range, no layer to prune, or a layer in ``layers``
            that TF-MOT cannot prune (the message says what to do).
    """
    target_sparsity = _check_number("sparsity", target_sparsity, 0.0, 0.99)
    initial_sparsity = _check_number("initial_sparsity", initial_sparsity, 0.0, 0.99)
    if schedule not in SCHEDULES:
        raise BadInputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if granularity not in GRANULARITIES:
        raise BadInputError(
            f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}"
        )
    if schedule == "polynomial" and initial_sparsity > target_sparsity:
        raise BadInputError(
            f"initial_sparsity {initial_sparsity:g} is above the target sparsity "
            f"{target_sparsity:g}; the polynomial schedule ramps up to the target"
        )
    if schedule == "constant" and initial_sparsity:
        raise BadInputError(
            f"initial_sparsity {initial_sparsity:g} applies to schedule 'polynomial' only; the "
            "constant schedule prunes to the target at once"
        )
    if granularity == "2:4":
        if target_sparsity != 0.5:
            raise BadInputError(
                f"2:4 sparsity is 0.5 by definition; got sparsity {target_sparsity:g}"
            )
        if schedule != "constant" or initial_sparsity or frequency is not None:
            raise BadInputError(
                "granularity '2:4' takes no schedule, initial_sparsity or frequency: TF-MOT "
                "sets the 2:4 masks once, at the first training step"
            )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise BadInputError(
            f"method 'tfmot' prunes while fine-tuning, so epochs must be an integer >= 1; got "
            f"{epochs!r} (to prune without training use method 'level')"
        )
    block = tuple(block_size)
    if len(block) != 2 or not all(isinstance(b, int) and b >= 1 for b in block):
        raise BadInputError(f"block must be two integers >= 1 (height, width); got {block_size!r}")
    if frequency is not None and (isinstance(frequency, bool) or not isinstance(frequency, int)):
        raise BadInputError(f"frequency must be an integer >= 1; got {frequency!r}")
    if frequency is not None and frequency < 1:
        raise BadInputError(f"frequency must be an integer >= 1; got {frequency!r}")

    from edgekit._keras import keras

    tfmot = _tfmot()

    chosen, skipped = _tfmot_select(model, granularity, layers)
    if skipped:
        by_reason: dict[str, list[str]] = {}
        for name, why in skipped.items():
            by_reason.setdefault(why, []).append(name)
        shown = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
        ctx.note(f"prune (tfmot, {granularity}): {len(skipped)} layer(s) left dense: {shown}")
    if not chosen:
        raise BadInputError(
            f"no layer of model '{model.name}' can be pruned by TF-MOT with granularity "
            f"{granularity!r}; use method 'level', 'magnitude' or 'sensitivity'"
        )
    steps_per_epoch = max(1, math.ceil(len(ctx.data.x_train) / ctx.batch_size))
    total_steps = steps_per_epoch * epochs
    pruning_schedule, described = _schedule(
        tfmot,
        granularity,
        schedule,
        target_sparsity,
        initial_sparsity,
        total_steps,
        steps_per_epoch,
        frequency,
    )
    params: dict[str, Any] = {"pruning_schedule": pruning_schedule}
    if granularity == "block":
        params["block_size"] = block
    elif granularity == "2:4":
        params["sparsity_m_by_n"] = _M_BY_N

    working = _copy_model(model)
    wanted = set(chosen)

    def wrap(layer: Any) -> Any:
        # The copy's own layers are reused (as prune_low_magnitude does), so the wrappers
        # train the copy's weights.
        if layer.name in wanted:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **params)
        return layer

    wrapped = keras.models.clone_model(working, clone_function=wrap)
    ctx.say(
        f"prune (tfmot, {granularity}): {len(chosen)} layers to {target_sparsity:g}; "
        f"{described}; {epochs} epoch(s) of {steps_per_epoch} steps"
    )
    ctx.fine_tune(
        wrapped,
        epochs,
        learning_rate=learning_rate,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude,
    )

    for layer in wrapped.layers:
        if isinstance(layer, PruneLowMagnitude):
            # The last optimizer update ran after the last masking; mask once more.
            for weight, mask, _ in layer.pruning_vars:
                weight.assign(weight * mask)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    stripped._name = model.name
    stats = weight_sparsity(stripped)
    ctx.state["sparsity"] = stats["overall"]
    ctx.state["pruned"] = True
    ctx.state["pruned_layers"] = list(chosen)
    ctx.state["prune_granularity"] = granularity
    ctx.say(f"prune (tfmot): overall kernel sparsity {stats['overall']:.3f}")
    return stripped


# --------------------------------------------------------------------------- recipe step

_APPLIES = {
    "sparsity": ("tfmot", "level"),
    "schedule": ("tfmot",),
    "initial_sparsity": ("tfmot",),
    "granularity": ("tfmot",),
    "block": ("tfmot",),
    "threshold": ("magnitude",),
    "s": ("sensitivity",),
    "frequency": ("tfmot",),
}


def check_prune_options(method: str, **options: Any) -> None:
    """Refuse an option the method does not use (given, i.e. not None) or a missing one.

    Each method uses only its own options (see the step's option help); giving another is an
    error rather than silently ignored, so a recipe never looks like it does what it does
    not.

    Raises:
        BadInputError: names the option, the method and what to do.
    """
    for key, methods in _APPLIES.items():
        if options.get(key) is not None and method not in methods:
            raise BadInputError(
                f"prune: option '{key}' applies to method {' and '.join(methods)}, not "
                f"'{method}'; remove it"
            )
    if method == "magnitude" and options.get("threshold") is None:
        raise BadInputError("prune: method 'magnitude' needs option 'threshold' (a number >= 0)")
    if method == "sensitivity" and options.get("s") is None:
        raise BadInputError("prune: method 'sensitivity' needs option 's' (a number >= 0)")
    granularity = options.get("granularity") or "element"
    schedule = options.get("schedule") or "constant"
    if options.get("block") is not None and granularity != "block":
        raise BadInputError("prune: option 'block' applies to granularity 'block' only; remove it")
    if granularity == "2:4":
        for key in ("schedule", "initial_sparsity", "frequency"):
            if options.get(key) is not None:
                raise BadInputError(
                    f"prune: option '{key}' does not apply to granularity '2:4' (TF-MOT sets "
                    "2:4 masks once, at the first step); remove it"
                )
    if options.get("initial_sparsity") is not None and schedule != "polynomial":
        raise BadInputError(
            "prune: option 'initial_sparsity' applies to schedule 'polynomial' only; remove it"
        )
    block = options.get("block")
    if block is not None and len(block) != 2:
        raise BadInputError(f"prune.block = {block!r}: give two integers, [height, width]")
    epochs = options.get("epochs")
    if method != "tfmot" and not epochs and options.get("learning_rate") is not None:
        raise BadInputError(
            "prune: option 'learning_rate' is used for fine-tuning only; give epochs >= 1 or "
            "remove it"
        )
    if method == "tfmot" and epochs == 0:
        raise BadInputError(
            "prune: method 'tfmot' prunes while fine-tuning, so epochs must be >= 1 (to prune "
            "without training use method 'level')"
        )


@register_step(
    "prune",
    options={
        "method": Option(
            str,
            "tfmot",
            "tfmot (prune while fine-tuning), magnitude (|w| <= threshold), sensitivity "
            "(|w| <= s * layer std), level (each layer to sparsity)",
            choices=METHODS,
        ),
        "sparsity": Option(
            float,
            help="tfmot, level: share of zeros per pruned layer [default 0.5]",
            min=0.0,
            max=0.99,
            optional=True,
        ),
        "schedule": Option(
            str,
            help="tfmot: constant (one-shot) or polynomial (gradual) [default constant]",
            choices=SCHEDULES,
            optional=True,
        ),
        "initial_sparsity": Option(
            float,
            help="tfmot polynomial: sparsity at the start of the ramp [default 0]",
            min=0.0,
            max=0.99,
            optional=True,
        ),
        "granularity": Option(
            str,
            help="tfmot: element, block (dense kernels) or 2:4 [default element]",
            choices=GRANULARITIES,
            optional=True,
        ),
        "block": Option(
            list,
            help="tfmot block: [height, width] of a block [default [1, 4]]",
            item=int,
            min=1,
            max=64,
            optional=True,
        ),
        "threshold": Option(
            float, help="magnitude (required): prune |w| <= threshold", min=0.0, optional=True
        ),
        "s": Option(
            float,
            help="sensitivity (required): prune |w| <= s * std of the layer's weights",
            min=0.0,
            optional=True,
        ),
        "epochs": Option(
            int,
            help="fine-tuning epochs (zeros kept) [default: 2 for tfmot, else 0]",
            min=0,
            max=1000,
            optional=True,
        ),
        "learning_rate": Option(
            float,
            help="fine-tuning learning rate [default 0.001]",
            min=1e-7,
            max=1.0,
            optional=True,
        ),
        "frequency": Option(
            int,
            help="tfmot: steps between mask updates [default: from the steps per epoch]",
            min=1,
            optional=True,
        ),
        "layers": Option(
            list,
            help="prune only these layers [default: every prunable layer]",
            item=str,
            optional=True,
        ),
    },
    help="zero kernel weights (TF-MOT while fine-tuning, or magnitude / sensitivity / level)",
    check=lambda o: check_prune_options(
        o["method"], **{k: v for k, v in o.items() if k not in ("method", "layers")}
    ),
)
def prune_step(
    model: Any,
    ctx: StepContext,
    *,
    method: str,
    sparsity: float | None,
    schedule: str | None,
    initial_sparsity: float | None,
    granularity: str | None,
    block: list[int] | None,
    threshold: float | None,
    s: float | None,
    epochs: int | None,
    learning_rate: float | None,
    frequency: int | None,
    layers: list[str] | None,
) -> Any:
    """Zero kernel weights with one of the four methods; the result keeps its zeros.

    Options that a method does not use are refused (see :func:`check_prune_options`).
    """
    check_prune_options(
        method,
        sparsity=sparsity,
        schedule=schedule,
        initial_sparsity=initial_sparsity,
        granularity=granularity,
        block=block,
        threshold=threshold,
        s=s,
        epochs=epochs,
        learning_rate=learning_rate,
        frequency=frequency,
    )
    lr = 1e-3 if learning_rate is None else learning_rate
    if method == "tfmot":
        return prune_tfmot(
            model,
            ctx,
            0.5 if sparsity is None else sparsity,
            schedule=schedule or "constant",
            initial_sparsity=initial_sparsity or 0.0,
            epochs=2 if epochs is None else epochs,
            frequency=frequency,
            granularity=granularity or "element",
            block_size=tuple(block or (1, 4)),
            learning_rate=lr,
            layers=layers,
        )
    if method == "magnitude":
        result = prune_magnitude(model, threshold, layers=layers)  # type: ignore[arg-type]
    elif method == "sensitivity":
        result = prune_sensitivity(model, s, layers=layers)  # type: ignore[arg-type]
    else:
        result = prune_level(model, 0.5 if sparsity is None else sparsity, layers=layers)
    stats = weight_sparsity(result.model)
    ctx.say(
        f"prune ({method}): {len(result.layers)} layers pruned; overall kernel sparsity "
        f"{stats['overall']:.3f}"
    )
    fine_tune_sparse(result.model, ctx, epochs or 0, lr)
    stats = weight_sparsity(result.model)
    ctx.state["sparsity"] = stats["overall"]
    ctx.state["pruned"] = True
    ctx.state["pruned_layers"] = list(result.layers)
    ctx.state["prune_granularity"] = "element"
    return result.model
