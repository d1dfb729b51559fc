"""Weight sharing: each kernel drawn from a small codebook of shared values.

Two ways to find the codebook:

- :func:`cluster_tfmot`: TF-MOT's ``cluster_weights`` (k-means on each kernel, then
  fine-tuning of the centroids), with optional sparsity preservation after pruning.
- :func:`cluster_gmm`: a one-dimensional Gaussian mixture per kernel (scikit-learn); each
  weight becomes the mean of its most probable component. No fine-tuning.

Storage: a clustered kernel of ``n`` weights needs a codebook of ``k`` float32 values and
``n`` indices of ``ceil(log2 k)`` bits. :func:`codebook_size` counts that for every clustered
kernel; :func:`write_codebook` stores it (the container of :mod:`edgekit.compress._bitpack`)
and :func:`read_codebook` reads it back exactly. A TFLite file still stores the shared values
as one float (or int8) per weight: the saving shows when the file is compressed, or on a
runtime that decodes codebooks.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import write_bytes_atomic
from edgekit.compress._bitpack import (
    PackedWeights,
    PackWriter,
    pack_uint,
    packed_size,
    read_pack,
    read_raw,
    section,
    unpack_uint,
)
from edgekit.compress._steps import Option, StepContext, register_step
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

METHODS = ("kmeans", "gmm")
INITS = ("kmeans_plus_plus", "linear", "random", "density")
MIN_CLUSTERS = 2
MAX_CLUSTERS = 256
# Kernels larger than this fit their mixture on a seeded sample (EM on every weight of a big
# kernel costs seconds and does not move the means).
GMM_FIT_SAMPLES = 20_000
_KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _check_clusters(clusters: Any, least: int = MIN_CLUSTERS) -> int:
    if isinstance(clusters, bool) or not isinstance(clusters, int | np.integer):
        raise BadInputError(
            f"clusters must be an integer in [{least}, {MAX_CLUSTERS}]; got {clusters!r}"
        )
    if not least <= clusters <= MAX_CLUSTERS:
        raise BadInputError(f"clusters must be in [{least}, {MAX_CLUSTERS}]; got {clusters}")
    return int(clusters)


def index_bits(clusters: int) -> int:
    """Bits per index into a codebook of ``clusters`` values: ``ceil(log2 k)``, at least 1."""
    return max(1, math.ceil(math.log2(clusters)))


def _kernels(model: Any, layers: Sequence[str] | None) -> list[tuple[Any, int, Any]]:
    """(layer, position in get_weights(), variable) of every kernel, in model order."""
    if layers is not None:
        names = {layer.name for layer in model.layers}
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise BadInputError(
                f"model '{model.name}' has no layer {', '.join(repr(n) for n in unknown)}"
            )
    wanted = None if layers is None else set(layers)
    out = []
    for layer in model.layers:
        if wanted is not None and layer.name not in wanted:
            continue
        for attr in _KERNEL_ATTRS:
            var = getattr(layer, attr, None)
            if var is None or not hasattr(var, "numpy"):
                continue
            index = next((i for i, w in enumerate(layer.weights) if w is var), None)
            if index is not None:
                out.append((layer, index, var))
    return out


def _copy(model: Any) -> Any:
    from edgekit._keras import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# -- TF-MOT k-means ------------------------------------------------------------------------


def cluster_tfmot(
    model: Any,
    ctx: StepContext,
    clusters: int = 16,
    init: str = "kmeans_plus_plus",
    epochs: int = 1,
    learning_rate: float = 1e-4,
    preserve_sparsity: bool = False,
) -> Any:
    """Cluster every kernel TF-MOT can cluster into ``clusters`` shared values and fine-tune.

    Layers TF-MOT cannot wrap (custom layers such as ``GroupConv2D``) and kernels with no
    more weights than clusters are left as they are, with a note; TF-MOT does not cluster
    depthwise kernels. With ``preserve_sparsity`` after a pruning step (``ctx.state``
    ``"pruned"`` or ``"sparsity"``), zeros stay zero (TF-MOT's sparsity-preserving clustering).

    Args:
        model: a functional or sequential ``tf_keras`` model; it is not changed.
        ctx: the step context (training data, seed, notes, state).
        clusters: shared values per kernel, 2..256 (3..256 when preserving sparsity).
        init: centroid initialization: ``kmeans_plus_plus``, ``linear`` (evenly spaced between
            min and max), ``random`` (uniform in that range) or ``density`` (evenly spaced on
            the weights' CDF).
        epochs: fine-tuning epochs of the centroids (0: none).
        learning_rate: fine-tuning learning rate.
        preserve_sparsity: keep pruned zeros at zero (used only when weights were pruned).

    Returns:
        A new model with ordinary layers (wrappers stripped) whose clustered kernels hold at
        most ``clusters`` distinct values.

    Raises:
        BadInputError: ``clusters`` or ``init`` is out of range, or nothing can be clustered.
    """
    return _tfmot(model, ctx, clusters, init, epochs, learning_rate, preserve_sparsity)[0]


def _tfmot(
    model: Any,
    ctx: StepContext,
    clusters: int,
    init: str,
    epochs: int,
    learning_rate: float,
    preserve_sparsity: bool,
) -> tuple[Any, list[str]]:
    from edgekit._keras import keras

    if init not in INITS:
        raise BadInputError(f"unknown centroid init {init!r}; choose one of {', '.join(INITS)}")
    pruned = bool(ctx.state.get("pruned") or ctx.state.get("sparsity"))
    sparse = bool(preserve_sparsity and pruned)
    clusters = _check_clusters(clusters, 3 if sparse else MIN_CLUSTERS)

    import tensorflow_model_optimization as tfmot

    centroids = tfmot.clustering.keras.CentroidInitialization
    init_enum = {
        "kmeans_plus_plus": centroids.KMEANS_PLUS_PLUS,
        "linear": centroids.LINEAR,
        "random": centroids.RANDOM,
        "density": centroids.DENSITY_BASED,
    }[init]
    keras.utils.set_random_seed(ctx.seed)
    # TF-MOT rewires the layers it wraps; work on a copy so ``model`` stays as it was.
    work = _copy(model)
    clustered: list[str] = []
    unsupported: list[str] = []
    too_small: list[str] = []
    depthwise: list[str] = []

    def wrap(layer: Any) -> Any:
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if not layer.trainable_weights:
            return layer
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and int(np.prod(kernel.shape)) <= clusters:
            too_small.append(layer.name)
            return layer
        try:
            wrapped = tfmot.clustering.keras.cluster_weights(
                layer,
                number_of_clusters=clusters,
                cluster_centroids_init=init_enum,
                preserve_sparsity=sparse,
            )
        except ValueError:  # "Please initialize `Cluster` with a supported layer"
            unsupported.append(f"{layer.name} ({type(layer).__name__})")
            return layer
        if wrapped is layer or not wrapped.layer.get_clusterable_weights():
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                depthwise.append(layer.name)
            return layer
        clustered.append(layer.name)
        return wrapped

    wrapped_model = keras.models.clone_model(work, clone_function=wrap)
    if unsupported:
        ctx.note(f"not clustered, TF-MOT cannot cluster these layers: {', '.join(unsupported)}")
    if too_small:
        ctx.note(
            f"not clustered, their kernels have no more than {clusters} weights: "
            f"{', '.join(too_small)}"
        )
    if depthwise:
        ctx.note(f"TF-MOT does not cluster depthwise kernels: {len(depthwise)} left unclustered")
    if not clustered:
        raise BadInputError(
            f"model '{model.name}' has no layer TF-MOT can cluster (Conv2D, Dense, ...)"
        )
    if preserve_sparsity and not pruned:
        log.info("preserve_sparsity has no effect: no earlier step pruned the weights")
    ctx.say(
        f"cluster: {len(clustered)} kernels to {clusters} values (init {init}"
        f"{', zeros kept' if sparse else ''}), fine-tuning {epochs} epochs"
    )
    ctx.fine_tune(wrapped_model, epochs, learning_rate)
    stripped = tfmot.clustering.keras.strip_clustering(wrapped_model)
    ctx.state["clustered"] = clusters
    return stripped, clustered


# -- Gaussian mixture ----------------------------------------------------------------------


def cluster_gmm(
    model: Any,
    clusters: int = 16,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    preserve_zeros: bool = False,
) -> Any:
    """Replace each kernel by a codebook from a 1-D Gaussian mixture of its weights.

    Each weight becomes the mean of its most probable component, so a kernel keeps at most
    ``clusters`` distinct values. Kernels with no more weights (or distinct values) than
    ``clusters`` are left as they are.

    Args:
        model: a ``tf_keras`` model; it is not changed.
        clusters: components per kernel, 2..256.
        layers: names of the layers whose kernels (``kernel``, ``depthwise_kernel``,
            ``pointwise_kernel``) are clustered; None: every layer with one.
        seed: fixes the mixture's initialization and the fitting sample.
        preserve_zeros: zeros stay exactly zero (after pruning); the other weights get
            ``clusters - 1`` components.

    Returns:
        A new model with the clustered kernels.

    Raises:
        BadInputError: ``clusters`` is out of range or a layer name is unknown.
    """
    return _gmm(model, clusters, layers, seed, preserve_zeros)[0]


def _gmm(
    model: Any,
    clusters: int,
    layers: Sequence[str] | None,
    seed: int,
    preserve_zeros: bool,
) -> tuple[Any, list[str]]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    clusters = _check_clusters(clusters, 3 if preserve_zeros else MIN_CLUSTERS)
    out = _copy(model)
    done: list[str] = []
    rng = np.random.default_rng(seed)
    for layer, index, var in _kernels(out, layers):
        values = layer.get_weights()
        kernel = values[index]
        flat = kernel.ravel()
        mask = flat != 0 if preserve_zeros else np.ones(flat.shape, dtype=bool)
        components = clusters - 1 if preserve_zeros else clusters
        data = flat[mask].astype(np.float64)
        if flat.size <= clusters or np.unique(data).size <= components:
            continue
        sample = data if data.size <= GMM_FIT_SAMPLES else rng.choice(data, GMM_FIT_SAMPLES, False)
        mixture = GaussianMixture(
            n_components=components, random_state=int(rng.integers(2**31)), max_iter=200
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mixture.fit(sample.reshape(-1, 1))
        labels = mixture.predict(data.reshape(-1, 1))
        new = flat.copy()
        new[mask] = mixture.means_[labels, 0].astype(kernel.dtype)
        values[index] = new.reshape(kernel.shape)
        layer.set_weights(values)
        done.append(layer.name)
        log.debug("gmm: %s/%s to %d values", layer.name, var.name, np.unique(new).size)
    return out, done


# -- storage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelCodebook:
    """The codebook storage of one clustered kernel.

    Attributes:
        layer: the layer's name.
        weight: the kernel variable's name.
        weights: weights in the kernel.
        distinct: distinct values it holds (at most ``clusters``).
        index_bits: ``ceil(log2 clusters)``.
        codebook_bytes: ``clusters`` float32 values.
        index_bytes: ``ceil(weights * index_bits / 8)``.
        float32_bytes: ``4 * weights``.
    """

    layer: str
    weight: str
    weights: int
    distinct: int
    index_bits: int
    codebook_bytes: int
    index_bytes: int
    float32_bytes: int

    @property
    def stored_bytes(self) -> int:
        return self.codebook_bytes + self.index_bytes


@dataclass(frozen=True)
class CodebookReport:
    """Codebook storage of a model's clustered kernels against float32.

    Attributes:
        clusters: the codebook size ``k``.
        kernels: one entry per clustered kernel.
        unclustered: kernels (``layer/weight``) among those examined with more than ``k``
            distinct values; counted in ``other_float_bytes``.
        other_float_bytes: every other weight of the model in float32 bytes.
    """

    clusters: int
    kernels: tuple[KernelCodebook, ...]
    unclustered: tuple[str, ...]
    other_float_bytes: int

    @property
    def codebook_bytes(self) -> int:
        return sum(k.codebook_bytes for k in self.kernels)

    @property
    def index_bytes(self) -> int:
        return sum(k.index_bytes for k in self.kernels)

    @property
    def float32_bytes(self) -> int:
        return sum(k.float32_bytes for k in self.kernels)

    @property
    def stored_bytes(self) -> int:
        return self.codebook_bytes + self.index_bytes

    @property
    def ratio(self) -> float:
        """Codebook + index bytes over the float32 bytes of the same kernels."""
        return self.stored_bytes / self.float32_bytes if self.float32_bytes else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters,
            "index_bits": index_bits(self.clusters),
            "kernels": [asdict(k) for k in self.kernels],
            "unclustered": list(self.unclustered),
            "codebook_bytes": self.codebook_bytes,
            "index_bytes": self.index_bytes,
            "stored_bytes": self.stored_bytes,
            "float32_bytes": self.float32_bytes,
            "ratio": self.ratio,
            "other_float_bytes": self.other_float_bytes,
        }


def _is_clustered(kernel: np.ndarray, clusters: int) -> bool:
    return kernel.size > clusters and np.unique(kernel).size <= clusters


def codebook_size(model: Any, clusters: int, layers: Sequence[str] | None = None) -> CodebookReport:
    """The storage of every clustered kernel as a codebook plus bit-packed indices.

    A kernel counts as clustered when it has more weights than ``clusters`` but at most
    ``clusters`` distinct values. Its size is ``4 * clusters`` codebook bytes plus
    ``ceil(weights * ceil(log2 clusters) / 8)`` index bytes, against ``4 * weights``.

    Args:
        model: a ``tf_keras`` model.
        clusters: the codebook size ``k``, 2..256.
        layers: examine only these layers' kernels (default: every kernel).

    Returns:
        The per-kernel and total sizes.

    Raises:
        BadInputError: ``clusters`` is out of range or a layer name is unknown.
    """
    clusters = _check_clusters(clusters)
    bits = index_bits(clusters)
    entries: list[KernelCodebook] = []
    unclustered: list[str] = []
    counted: set[int] = set()
    for layer, index, var in _kernels(model, layers):
        kernel = layer.get_weights()[index]
        if not _is_clustered(kernel, clusters):
            unclustered.append(f"{layer.name}/{var.name.split('/')[-1]}")
            continue
        counted.add(id(var))
        entries.append(
            KernelCodebook(
                layer=layer.name,
                weight=var.name,
                weights=int(kernel.size),
                distinct=int(np.unique(kernel).size),
                index_bits=bits,
                codebook_bytes=4 * clusters,
                index_bytes=packed_size(int(kernel.size), bits),
                float32_bytes=4 * int(kernel.size),
            )
        )
    other = sum(4 * int(np.prod(w.shape)) for w in model.weights if id(w) not in counted)
    return CodebookReport(
        clusters=clusters,
        kernels=tuple(entries),
        unclustered=tuple(unclustered),
        other_float_bytes=other,
    )


def write_codebook(
    model: Any, path: str | Path, clusters: int, layers: Sequence[str] | None = None
) -> CodebookReport:
    """Store every weight of ``model``: clustered kernels as codebook + bit-packed indices.

    Each clustered kernel (see :func:`codebook_size`) is written as its distinct float32
    values (at most ``clusters``) and one ``ceil(log2 clusters)``-bit index per weight; every
    other weight as raw float32. The file is written atomically; :func:`read_codebook`
    reads it back exactly.

    Returns:
        The sizes (:func:`codebook_size`).

    Raises:
        BadInputError: ``clusters`` is out of range, a layer name is unknown, or no kernel is
            clustered.
    """
    report = codebook_size(model, clusters, layers)
    if not report.kernels:
        raise BadInputError(
            f"model '{model.name}' has no kernel with at most {clusters} distinct values; "
            "cluster it first (cluster_tfmot or cluster_gmm)"
        )
    coded = {(k.layer, k.weight) for k in report.kernels}
    bits = index_bits(report.clusters)
    writer = PackWriter()
    layers_out: list[dict[str, Any]] = []
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        entries = []
        for var, value in zip(layer.weights, values, strict=True):
            if (layer.name, var.name) not in coded:
                entries.append({"name": var.name, **writer.add_raw(value)})
                continue
            codebook, indices = np.unique(value.ravel(), return_inverse=True)
            codebook = codebook.astype(np.float32)
            entries.append(
                {
                    "name": var.name,
                    "encoding": "codebook",
                    "shape": list(value.shape),
                    "bits": bits,
                    **writer.add(pack_uint(indices, bits)),
                    "codebook": {**writer.add(codebook.tobytes()), "count": int(codebook.size)},
                }
            )
        layers_out.append({"name": layer.name, "weights": entries})
    data, _ = writer.finish("codebook", model.name, layers_out)
    write_bytes_atomic(path, data)
    return report


def read_codebook(path: str | Path) -> PackedWeights:
    """Read a file written by :func:`write_codebook`; every weight decoded exactly.

    Returns:
        The weights by layer (apply them with
        :func:`edgekit.compress._bitpack.apply_packed_weights`).

    Raises:
        ModelLoadError: the file is missing, not a codebook weight pack, or truncated.
    """
    header, payload = read_pack(path, "codebook")
    out = PackedWeights(model=header["model"], weights={})
    for layer in header["layers"]:
        values = []
        for entry in layer["weights"]:
            if entry["encoding"] == "raw":
                values.append(read_raw(payload, entry))
                continue
            ref = entry["codebook"]
            codebook = np.frombuffer(section(payload, ref), np.float32)
            count = int(np.prod(entry["shape"]))
            indices = unpack_uint(section(payload, entry), entry["bits"], count)
            values.append(codebook[indices].reshape(entry["shape"]))
        out.weights[layer["name"]] = values
    return out


# -- the recipe step ---------------------------------------------------------------------------


@register_step(
    "cluster",
    options={
        "method": Option(
            str, "kmeans", "kmeans (TF-MOT, fine-tuned) or gmm (Gaussian mixture)", choices=METHODS
        ),
        "clusters": Option(int, 16, "shared values per kernel", min=MIN_CLUSTERS, max=MAX_CLUSTERS),
        "init": Option(str, "kmeans_plus_plus", "k-means centroid initialization", choices=INITS),
        "epochs": Option(int, 2, "fine-tuning epochs of the k-means centroids", min=0),
        "learning_rate": Option(float, 1e-4, "fine-tuning learning rate", min=0.0, max=1.0),
        "preserve_sparsity": Option(
            bool, True, "keep pruned zeros at zero (when an earlier step pruned)"
        ),
    },
)
def cluster_step(
    model: Any,
    ctx: StepContext,
    method: str,
    clusters: int,
    init: str,
    epochs: int,
    learning_rate: float,
    preserve_sparsity: bool,
) -> Any:
    """Share weights: each kernel drawn from a codebook of ``clusters`` values."""
    if method == "kmeans":
        out, names = _tfmot(model, ctx, clusters, init, epochs, learning_rate, preserve_sparsity)
    else:
        pruned = bool(ctx.state.get("pruned") or ctx.state.get("sparsity"))
        if epochs:
            ctx.note("cluster (gmm): the codebook is not fine-tuned; epochs ignored")
        out, names = _gmm(model, clusters, None, ctx.seed, preserve_sparsity and pruned)
        if not names:
            raise BadInputError(
                f"model '{model.name}' has no kernel with more than {clusters} distinct values"
            )
        ctx.state["clustered"] = clusters
    report = codebook_size(out, clusters, names)
    ctx.state["codebook"] = report.as_dict()
    ctx.note(
        f"{len(report.kernels)} kernels share {clusters} values each: "
        f"{report.stored_bytes} bytes as codebook + {index_bits(clusters)}-bit indices instead "
        f"of {report.float32_bytes} in float32 (1/{1 / report.ratio:.1f}); TFLite still stores "
        "one value per weight, the saving shows when the file is compressed"
    )
    return out
