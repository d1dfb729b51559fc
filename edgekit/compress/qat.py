"""Quantization-aware training: fake-quant nodes (TF-MOT), fine-tuning, an int8-ready model.

``quantize_aware(model, ctx, ...)`` wraps every layer TF-MOT's default 8-bit scheme can
quantize (as ``quantize_model`` does when that is all of them), leaves the others in float and says so
in ``ctx.notes``, then fine-tunes. The result is the fake-quant Keras model that the
``tflite_int8`` converter turns into a full-integer model: the ranges learned in training
replace calibration where fake-quant nodes exist, the representative data covers the layers
left in float.

After pruning and clustering (``ctx.state``), TF-MOT's collaborative schemes keep what those
steps made: prune-preserving QAT (PQAT) multiplies every conv / dense kernel by its sparsity
mask, cluster-preserving QAT (CQAT; PCQAT with the mask too) trains the centroids and keeps
each weight in its cluster. Where TF-MOT 0.8.1 falls short, edgekit fills in:

- depthwise kernels (both schemes skip them) and kernels of layers left in float: after every
  training step each cluster's weights are set to their mean and pruned weights to zero;
- a Conv2D kernel clustered per tensor keeps one codebook (TF-MOT takes it for per-channel
  clustering when every channel uses all k values, and ends with k values per channel);
- every layer gets its own weight quantizer (TF-MOT shares one, and CQAT's switches sparsity
  preservation off for every later layer once it meets a layer without zeros).

Every tiny zoo model converts to full int8 after QAT and agrees with its QAT Keras model;
average pools keep their input's range (a range of their own fails the conversion of
DenseNet and ShuffleNet v1), layers left in float get only an output range.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edgekit.compress._steps import Option, StepContext, register_step
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

PRESERVE = ("auto", "none", "sparsity", "clusters", "both")

# Layers TF-MOT's default registry does not quantize by itself but its layout transforms do:
# a batch norm right after a linear conv / dense is folded into it, a separable conv is split
# into a depthwise and a pointwise conv.
_SPLIT_BY_TRANSFORM = ("SeparableConv1D", "SeparableConv2D")


@dataclass(frozen=True)
class FloatLayer:
    """A layer quantization-aware training leaves in float, and why."""

    name: str
    type: str
    reason: str


def resolve_preserve(preserve: str, state: dict[str, Any]) -> tuple[bool, bool]:
    """What to preserve: (sparsity, clusters).

    Args:
        preserve: ``"auto"`` (from ``state``: ``"pruned"`` or ``"sparsity"`` set by a pruning
            step, ``"clustered"`` or ``"clusters"`` by a clustering step), ``"none"``,
            ``"sparsity"``, ``"clusters"`` or ``"both"``.
        state: the recipe's ``ctx.state``.

    Raises:
        BadInputError: ``preserve`` is not one of :data:`PRESERVE`.
    """
    if preserve not in PRESERVE:
        raise BadInputError(f"unknown preserve {preserve!r}; choose one of {', '.join(PRESERVE)}")
    if preserve == "auto":
        return (
            bool(state.get("pruned") or state.get("sparsity")),
            bool(state.get("clustered") or state.get("clusters")),
        )
    return preserve in ("sparsity", "both"), preserve in ("clusters", "both")


def float_layers(model: Any) -> list[FloatLayer]:
    """The layers of ``model`` TF-MOT's default 8-bit scheme cannot quantize.

    Args:
        model: a functional or sequential ``tf_keras`` model.

    Returns:
        One :class:`FloatLayer` per layer that would stay in float, in model order.
    """
    return _float_layers(_copy(model))


def _float_layers(model: Any) -> list[FloatLayer]:
    from edgekit._keras import keras

    registry = _default_registry()
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or _quantizable(layer, model, registry):
            continue
        kind = type(layer).__name__
        if isinstance(layer, keras.Model):
            reason = "a nested model"
        elif isinstance(layer, keras.layers.Lambda):
            reason = "a Lambda layer"
        elif isinstance(layer, keras.layers.BatchNormalization):
            reason = "a batch norm that does not follow a conv or dense layer it can fold into"
        else:
            reason = f"TF-MOT has no 8-bit quantization for {kind}"
        out.append(FloatLayer(layer.name, kind, reason))
    return out


def prepare_qat(model: Any, sparsity: bool = False, clusters: bool = False) -> tuple[Any, list]:
    """Wrap ``model`` for quantization-aware training, without training it.

    Args:
        model: a functional or sequential ``tf_keras`` model (not modified); clustered
            weights must already be stripped of TF-MOT's clustering wrappers.
        sparsity: keep the zeros of every kernel (PQAT, or PCQAT with ``clusters``).
        clusters: keep each weight in its cluster (CQAT).

    Returns:
        The fake-quant model and the :class:`FloatLayer` list of layers left in float.

    Raises:
        BadInputError: the model is not functional or sequential, already holds TF-MOT
            wrappers (quantization-aware, pruning or clustering), nests a model, or has no
            layer TF-MOT can quantize.
    """
    from edgekit._keras import keras

    qk = _tfmot().quantization.keras
    if not isinstance(model, keras.Model) or not (
        isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
    ):
        raise BadInputError(
            f"quantization-aware training needs a functional or sequential Keras model; "
            f"got {type(model).__name__}"
        )
    wrapped = [layer.name for layer in model.layers if _from_tfmot(layer)]
    if wrapped:
        raise BadInputError(
            f"model '{model.name}' already holds TF-MOT wrappers ({', '.join(wrapped[:3])}"
            f"{', ...' if len(wrapped) > 3 else ''}); quantization-aware training takes a plain "
            "Keras model (strip pruning / clustering wrappers first, and quantize only once)"
        )
    # A private copy: every layer is used once, in this model only (the layers of a model
    # that went through TF-MOT's strip_* are shared with the models it was built from, and
    # their node lists would mislead the checks below), and ``model`` stays as it was.
    work = _copy(model)
    floats = _float_layers(work)
    if any(f.reason == "a nested model" for f in floats):
        nested = ", ".join(f.name for f in floats if f.reason == "a nested model")
        raise BadInputError(
            f"model '{model.name}' nests models ({nested}); TF-MOT quantizes flat models only, "
            "rebuild it as one functional model"
        )
    if len(floats) == len([layer for layer in model.layers if _is_layer(layer)]):
        raise BadInputError(
            f"model '{model.name}' has no layer TF-MOT can quantize; quantization-aware "
            "training would change nothing"
        )
    configs = {f.name: _float_config(work.get_layer(f.name)) for f in floats}
    with qk.quantize_scope():
        if not configs:
            annotated = qk.quantize_annotate_model(work)
        else:

            def annotate(layer: Any) -> Any:
                if isinstance(layer, keras.layers.Lambda):
                    return layer
                return qk.quantize_annotate_layer(layer, quantize_config=configs.get(layer.name))

            annotated = keras.models.clone_model(work, clone_function=annotate)
        try:
            with _shared_codebooks_stay_shared(clusters):
                qat = qk.quantize_apply(annotated, scheme=_Scheme(sparsity, clusters))
        except (RuntimeError, ValueError) as err:
            raise BadInputError(
                f"model '{model.name}' cannot be prepared for quantization-aware training: "
                f"{str(err).splitlines()[0]}"
            ) from err
    return qat, floats


def quantize_aware(
    model: Any,
    ctx: StepContext,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    preserve: str = "auto",
) -> Any:
    """Quantization-aware training: fake-quant wrappers, then fine-tuning.

    Layers TF-MOT cannot quantize stay in float; each is noted (``ctx.note``) by name and
    type. The int8 converter calibrates them with representative data.

    Args:
        model: the float Keras model (not modified).
        ctx: the step context (training data, seed, state, notes).
        epochs: fine-tuning epochs; 0 only inserts the fake-quant nodes, whose activation
            ranges then keep their initial [-6, 6] (an int8 model converted from that loses
            accuracy: train at least one epoch).
        learning_rate: peak of the cosine schedule; QAT wants a small one (1e-4).
        preserve: see :func:`resolve_preserve`.

    Returns:
        The fake-quant (QAT) Keras model, cluster-training variables removed; it saves as
        ``.keras`` and loads with :func:`edgekit.models._io.load_keras_model`.

    Raises:
        BadInputError: see :func:`prepare_qat` and :func:`resolve_preserve`.
    """
    sparsity, clusters = resolve_preserve(preserve, ctx.state)
    scheme = {
        (False, False): "QAT",
        (True, False): "prune-preserving QAT",
        (False, True): "cluster-preserving QAT",
        (True, True): "sparsity- and cluster-preserving QAT",
    }[(sparsity, clusters)]
    qat, floats = prepare_qat(model, sparsity=sparsity, clusters=clusters)
    for f in floats:
        ctx.note(f"qat: layer '{f.name}' ({f.type}) stays float: {f.reason}")
    ctx.say(f"qat: {scheme}, {len(floats)} layer(s) left in float, {epochs} epoch(s)")
    keeper = _structure_keeper(qat, {f.name for f in floats}, sparsity, clusters)
    if keeper is not None:
        ctx.say(f"qat: edgekit keeps the structure of {len(keeper.names)} more kernel(s)")
    callbacks = [keeper] if keeper is not None else []
    ctx.fine_tune(qat, epochs, learning_rate=learning_rate, callbacks=callbacks)
    if clusters:
        qat = _strip_cluster_variables(qat)
    return qat


@register_step(
    "qat",
    options={
        "epochs": Option(int, 2, "fine-tuning epochs with fake quantization", min=0, max=1000),
        "learning_rate": Option(float, 1e-4, "fine-tuning learning rate", min=1e-7, max=1.0),
        "preserve": Option(
            str,
            "auto",
            "keep sparsity and/or clusters of earlier steps (auto: what they report)",
            choices=PRESERVE,
        ),
    },
    help="quantization-aware training (int8 fake quantization), keeping sparsity and clusters",
)
def qat_step(
    model: Any, ctx: StepContext, *, epochs: int, learning_rate: float, preserve: str
) -> Any:
    """Quantization-aware training; the result converts to a full-integer model."""
    out = quantize_aware(model, ctx, epochs=epochs, learning_rate=learning_rate, preserve=preserve)
    ctx.state["qat"] = True
    return out


# --- internals ----------------------------------------------------------------------------


def _copy(model: Any) -> Any:
    from edgekit._keras import keras

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def _is_layer(layer: Any) -> bool:
    from edgekit._keras import keras

    return not isinstance(layer, keras.layers.InputLayer)


def _tfmot() -> Any:
    """TF-MOT, imported after tf_keras so that it binds to Keras 2."""
    import edgekit._keras  # noqa: F401

    # isort: split
    import tensorflow_model_optimization as tfmot

    return tfmot


def _from_tfmot(layer: Any) -> bool:
    return type(layer).__module__.startswith("tensorflow_model_optimization")


def _default_registry() -> Any:
    return _tfmot().quantization.keras.default_8bit.Default8BitQuantizeRegistry()


def _quantizable(layer: Any, model: Any, registry: Any) -> bool:
    from edgekit._keras import keras

    kind = type(layer).__name__
    if isinstance(layer, keras.Model | keras.layers.Lambda):
        return False
    if registry.supports(layer) or kind in _SPLIT_BY_TRANSFORM:
        return True
    if type(layer) is not keras.layers.BatchNormalization:
        return False
    # TF-MOT folds a batch norm into the layer before it when that layer is a linear conv or
    # dense layer whose only consumer is this batch norm (its pattern matcher skips layers
    # with several consumers).
    nodes = layer.inbound_nodes
    if len(nodes) != 1:
        return False
    inbound = nodes[0].inbound_layers
    if isinstance(inbound, list):
        if len(inbound) != 1:
            return False
        inbound = inbound[0]
    if type(inbound) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense):
        return False
    if getattr(inbound, "activation", None) is not keras.activations.linear:
        return False
    return len(inbound.outbound_nodes) == 1 and inbound.name not in model.output_names


class _Scheme:
    """TF-MOT's 8-bit scheme: default, prune-preserving (PQAT) or cluster-preserving (CQAT,
    PCQAT with ``sparsity``), with :class:`_PerLayerRegistry` as its registry.

    Duck-typed ``QuantizeScheme``: ``quantize_apply`` calls only ``get_layout_transformer`` and
    ``get_quantize_registry``.
    """

    def __init__(self, sparsity: bool, clusters: bool) -> None:
        tfmot = _tfmot()
        qk = tfmot.quantization.keras
        if clusters:
            combine = tfmot.experimental.combine
            self._base = combine.Default8BitClusterPreserveQuantizeScheme(
                preserve_sparsity=sparsity
            )
        elif sparsity:
            self._base = qk.collab_opts.Default8BitPrunePreserveQuantizeScheme()
        else:
            self._base = qk.default_8bit.Default8BitQuantizeScheme()
        self._registry = _PerLayerRegistry(
            self._base.get_quantize_registry(), qk.default_8bit.Default8BitQuantizeRegistry()
        )

    def get_layout_transformer(self) -> Any:
        return self._base.get_layout_transformer()

    def get_quantize_registry(self) -> Any:
        return self._registry


class _PerLayerRegistry:
    """A scheme's registry that gives every layer its own quantize config and weight quantizer,
    and no output range of its own to an average pool.

    TF-MOT hands one config object (Conv2D, DepthwiseConv2D) and, in the collaborative
    registries, one weight quantizer object to every layer of a type; CQAT's quantizer switches
    ``preserve_sparsity`` off for good once it meets a layer without zeros, which then holds for
    every later layer too. TFLite's int8 AVERAGE_POOL_2D has one scale for input and output; a
    trained output range of its own clashes in the converter ("same scale constraint") when
    the pool also feeds a concat (DenseNet's transitions, ShuffleNet v1's shortcuts).
    Duck-typed ``QuantizeRegistry`` (``supports``, ``get_quantize_config``).
    """

    def __init__(self, registry: Any, default: Any) -> None:
        self.registry = registry
        # The collaborative registries call every layer without weights supported; the
        # default registry knows which ones really have an 8-bit config.
        self.default = default

    def supports(self, layer: Any) -> bool:
        return bool(self.default.supports(layer))

    def get_quantize_config(self, layer: Any) -> Any:
        from edgekit._keras import keras

        if type(layer) is keras.layers.AveragePooling2D:
            return _no_quantize_config()
        source = self.registry if self.registry.supports(layer) else self.default
        config = source.get_quantize_config(layer)
        if hasattr(config, "weight_quantizer"):
            config = copy.copy(config)
            config.weight_quantizer = copy.copy(config.weight_quantizer)
        return config


def _weight_attr(var: Any) -> str:
    """``block1_dw/depthwise_kernel:0`` -> ``depthwise_kernel``."""
    return str(var.name).rsplit("/", 1)[-1].split(":", 1)[0]


def _float_config(layer: Any) -> Any:
    """The quantize config of a layer TF-MOT cannot quantize: no fake-quant weights or
    activations, only its output quantized (so that every tensor has a trained range and
    TF-MOT's concat transform sees an annotated input). No output quantization where the
    only consumer is a batch norm (it quantizes after itself, and a fake-quant node between
    would keep the converter from folding the batch norm in) or the layer has several outputs
    (a split keeps its input's scale)."""
    from edgekit._keras import keras

    _tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    consumers = [node.outbound_layer for node in layer.outbound_nodes]
    multiple_outputs = len(layer.inbound_nodes) == 1 and isinstance(layer.output, list | tuple)
    before_batch_norm = len(consumers) == 1 and isinstance(
        consumers[0], keras.layers.BatchNormalization
    )
    quantize_output = not (multiple_outputs or before_batch_norm)
    # Default8BitQuantizeConfig serializes quantize_output (the .keras file keeps it), and
    # the concat transform switches it off through that attribute.
    return registry.Default8BitQuantizeConfig([], [], quantize_output)


# Kernels with more distinct values than this are not clustered (TF-MOT's CQAT limit too).
_MAX_CLUSTERS = 1024
_KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _structure_keeper(qat: Any, float_names: set[str], sparsity: bool, clusters: bool) -> Any:
    """A callback keeping the zeros and clusters of the kernels TF-MOT's schemes do not keep:
    depthwise kernels (PQAT and CQAT skip them) and the layers left in float (no weight
    quantizer to mask). None when there is nothing to keep."""
    import numpy as np

    from edgekit._keras import keras, tf

    if not (sparsity or clusters):
        return None
    targets = []
    for wrapper in qat.layers:
        layer = getattr(wrapper, "layer", None)
        if layer is None:
            continue
        if not (type(layer) is keras.layers.DepthwiseConv2D or layer.name in float_names):
            continue
        # The variables themselves, from the wrapper: it replaces the kernel attributes of the
        # layer it wraps with their fake-quant tensors, and tracks the variables itself.
        kernels = [v for v in wrapper.trainable_weights if _weight_attr(v) in _KERNEL_ATTRS]
        for var in kernels:
            w = np.asarray(var.numpy())
            labels = count = mask = None
            if clusters:
                values, inverse = np.unique(w, return_inverse=True)
                if 1 < len(values) <= _MAX_CLUSTERS and len(values) < w.size:
                    labels = tf.constant(inverse.reshape(-1).astype(np.int32))
                    count = len(values)
            if sparsity and np.any(w == 0):
                mask = tf.constant((w != 0).astype(np.float32))
            if labels is not None or mask is not None:
                targets.append((layer.name, var, labels, count, mask))
    if not targets:
        return None

    class KeepStructure(keras.callbacks.Callback):
        """After every training step: each cluster's weights to their mean, zeros to zero."""

        names = sorted({name for name, *_ in targets})

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            for _, var, labels, count, mask in targets:
                w = var
                if labels is not None:
                    means = tf.math.unsorted_segment_mean(tf.reshape(w, [-1]), labels, count)
                    w = tf.reshape(tf.gather(means, labels), var.shape)
                if mask is not None:
                    w = w * mask
                var.assign(w)

    return KeepStructure()


@contextmanager
def _shared_codebooks_stay_shared(active: bool) -> Iterator[None]:
    """Make CQAT keep one codebook per kernel where the clustered kernel has one.

    TF-MOT 0.8.1 guesses that a Conv2D kernel was clustered per channel whenever its channels
    hold about as many distinct values each (``get_centroids`` in
    ``cluster_preserve_quantize_registry``, since tensorflow/model-optimization#920). A kernel
    clustered per tensor into k values, whose every channel uses all k, then gets k centroids
    per channel that drift apart in training: k x channels distinct values. A kernel whose
    channels share their values was clustered per tensor; it keeps one codebook here. The
    function is swapped only while ``quantize_apply`` builds the layers (where TF-MOT reads it).
    """
    if not active:
        yield
        return
    import numpy as np

    _tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        cluster_preserve_quantize_registry as cqat,
    )

    guess = cqat.get_centroids

    def get_centroids(layer: Any, weight: Any, data_format: Any) -> tuple[Any, Any, Any, bool]:
        centroids, count, lookup, per_channel = guess(layer, weight, data_format)
        if per_channel and len(np.unique(np.asarray(weight))) <= int(count):
            centroids, lookup = cqat.get_unique(weight)
            return centroids, centroids.shape[0], lookup, False
        return centroids, count, lookup, per_channel

    cqat.get_centroids = get_centroids
    try:
        yield
    finally:
        cqat.get_centroids = guess


def _strip_cluster_variables(model: Any) -> Any:
    """Drop CQAT's centroid, index and original-weight variables (the kernels already hold
    the clustered values), so the model saves and reloads like a plain QAT model."""
    return _tfmot().experimental.combine.strip_clustering_cqat(model)


def _no_quantize_config() -> Any:
    """No fake-quant node at all: the layer's output keeps its input's range."""
    _tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    return registry.Default8BitQuantizeConfig([], [], False)
