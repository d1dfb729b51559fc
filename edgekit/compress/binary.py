"""Binarization: weights and activations to ±1, trained through a straight-through estimator.

A binary layer keeps a real-valued *latent* kernel, the variable the optimizer updates. Its
forward pass uses ``sign(latent)`` (``sign(0) = +1``) and the sign of its input; the backward
pass lets the gradient through the sign with a straight-through estimator (STE):

- ``"tanh"``: the derivative of tanh, ``1 - tanh²(x)``, a smooth stand-in for sign's
  derivative;
- ``"clipped"``: the clipped identity, 1 where ``|x| <= 1`` else 0 (BinaryNet).

Latent kernels are clipped to [-1, 1] after every update (:class:`LatentClip`), where the
clipped STE stops passing gradient anyway.

Scale: by default a binary kernel is ``alpha * sign(latent)`` with ``alpha = mean |latent|``
per output channel (XNOR-Net). Every binary layer in the zoo is followed by a batch norm,
which could absorb any per-channel scale, but alpha keeps the binary layer's outputs at the
magnitude of the float layer it replaces, so the copied batch-norm statistics stay roughly
valid before fine-tuning. It costs one float32 per output channel in storage (reported
separately from the 1-bit signs); ``scale=False`` drops it.

Activations: a binary layer takes the sign of its input. The zoo's layers read ReLU outputs,
whose sign would be +1 everywhere (``relu(x) >= 0``); ``sign(x)`` of the ReLU's input carries
the same bit as ``relu(x) > 0``, so a binary layer reads the tensor *before* a ReLU that feeds
it (the ReLU stays for its other readers, such as a residual add). A binary layer whose input
is non-negative for another reason (a pooled or concatenated ReLU output, the model's image
input) binarizes its weights only and is listed in the result. The first and last weighted
layers stay float by default (``keep_first``, ``keep_last``), as in every BNN paper.

Deployment: :func:`binary_to_float_model` gives an ordinary Keras model (float kernels equal
to ``alpha * ±1``, a :class:`BinarySign` layer of TFLite ``SIGN`` ops before each binarized
input) that converts to TFLite with the binary model's predictions. It runs in float: a speed-up
needs a binary-kernel engine such as Larq Compute Engine. :mod:`edgekit.compress._bitpack`
stores the signs at 1 bit per weight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit._keras import keras, tf
from edgekit.compress._steps import Option, StepContext, register_step
from edgekit.errors import BadInputError
from edgekit.models._graph import LayerCall, layer_calls, rebuild
from edgekit.models._layers import ChannelSplit, GroupConv2D

log = logging.getLogger(__name__)

STE_VARIANTS = ("tanh", "clipped")
PURPOSE = "binarization"

LARQ_NOTE = (
    "TFLite runs the binarized layers as float convolutions with ±1 weights (no speed-up, "
    "float32 model size): a speed-up needs a binary-kernel engine such as Larq Compute Engine"
)


# -- the quantizer -------------------------------------------------------------------------


def _sign(x: Any) -> Any:
    # sign(0) = +1 from two TFLite SIGN ops: sign(sign(x) + 0.5) maps {-1, 0, +1} to
    # {-1, +1, +1}. The training forward pass and the deployed graph use this same function.
    return tf.sign(tf.sign(x) + tf.constant(0.5, dtype=x.dtype))


@tf.custom_gradient
def _sign_tanh_ste(x: Any) -> tuple[Any, Callable[[Any], Any]]:
    def grad(dy: Any) -> Any:
        t = tf.tanh(x)
        return dy * (1.0 - t * t)

    return _sign(x), grad


@tf.custom_gradient
def _sign_clipped_ste(x: Any) -> tuple[Any, Callable[[Any], Any]]:
    def grad(dy: Any) -> Any:
        return dy * tf.cast(tf.abs(x) <= 1.0, dy.dtype)

    return _sign(x), grad


_STE = {"tanh": _sign_tanh_ste, "clipped": _sign_clipped_ste}


def _check_ste(ste: Any) -> str:
    if ste not in _STE:
        raise BadInputError(
            f"unknown straight-through estimator {ste!r}; choose one of {', '.join(STE_VARIANTS)}"
        )
    return str(ste)


def binary_sign(x: Any, ste: str = "tanh") -> Any:
    """``sign(x)`` in the forward pass (``sign(0) = +1``), a straight-through gradient back.

    Args:
        x: a float tensor (or variable).
        ste: ``"tanh"`` (gradient ``1 - tanh²(x)``) or ``"clipped"`` (gradient 1 where
            ``|x| <= 1``, else 0).

    Returns:
        A tensor of ±1 with the dtype and shape of ``x``.

    Raises:
        BadInputError: ``ste`` is not a known variant.
    """
    return _STE[_check_ste(ste)](tf.convert_to_tensor(x))


@keras.saving.register_keras_serializable(package="edgekit")
class LatentClip(keras.constraints.Constraint):
    """Clip latent weights to [-limit, limit] after every optimizer update."""

    def __init__(self, limit: float = 1.0) -> None:
        self.limit = float(limit)

    def __call__(self, w: Any) -> Any:
        return tf.clip_by_value(w, -self.limit, self.limit)

    def get_config(self) -> dict[str, Any]:
        return {"limit": self.limit}


# -- the layers ----------------------------------------------------------------------------


class BinaryLayer:
    """What the binary layers share: the latent kernel, its scale, the input sign.

    Attributes:
        ste: the straight-through estimator, ``"tanh"`` or ``"clipped"``.
        scale: multiply the signs by ``mean |latent|`` per output channel.
        binarize_inputs: take the sign of the input (False: weights-only binarization).
    """

    kernel_attr = "kernel"
    # Axes of the kernel reduced into one scale per output channel.
    scale_axes: tuple[int, ...] = ()

    # Keras attributes of the float layer this is mixed into (declared for type checkers).
    use_bias: bool
    bias: Any
    activation: Any
    data_format: str | None

    def __init__(
        self,
        *args: Any,
        ste: str = "tanh",
        scale: bool = True,
        binarize_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # the float layer's (BinaryLayer comes first)
        self.ste = _check_ste(ste)
        self.scale = bool(scale)
        self.binarize_inputs = bool(binarize_inputs)

    @property
    def latent_kernel(self) -> Any:
        """The real-valued kernel variable the optimizer updates."""
        return getattr(self, self.kernel_attr)

    def kernel_scale(self) -> Any:
        """``mean |latent|`` per output channel, broadcastable to the kernel; None if unscaled."""
        if not self.scale:
            return None
        return tf.reduce_mean(tf.abs(self.latent_kernel), axis=self.scale_axes, keepdims=True)

    def binarized_kernel(self) -> Any:
        """The kernel the forward pass uses: ``±1`` (times the scale)."""
        signs = binary_sign(self.latent_kernel, self.ste)
        alpha = self.kernel_scale()
        return signs if alpha is None else signs * alpha

    def binarize_input(self, inputs: Any) -> Any:
        return binary_sign(inputs, self.ste) if self.binarize_inputs else inputs

    def bias_and_activation(self, outputs: Any) -> Any:
        """The float layer's epilogue on the binary product."""
        if self.use_bias:
            data_format = getattr(self, "data_format", None)
            outputs = keras.backend.bias_add(outputs, self.bias, data_format=data_format)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()  # type: ignore[misc]
        return {
            **base,
            "ste": self.ste,
            "scale": self.scale,
            "binarize_inputs": self.binarize_inputs,
        }


@keras.saving.register_keras_serializable(package="edgekit")
class BinaryConv2D(BinaryLayer, keras.layers.Conv2D):
    """A ``Conv2D`` (``groups`` allowed) with binarized kernel and inputs."""

    scale_axes = (0, 1, 2)

    def call(self, inputs: Any) -> Any:
        # The convolution op directly, as GroupConv2D does: it takes groups natively.
        outputs = self.convolution_op(self.binarize_input(inputs), self.binarized_kernel())
        return self.bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="edgekit")
class BinaryDepthwiseConv2D(BinaryLayer, keras.layers.DepthwiseConv2D):
    """A ``DepthwiseConv2D`` with binarized kernel and inputs."""

    kernel_attr = "depthwise_kernel"
    scale_axes = (0, 1)

    def call(self, inputs: Any) -> Any:
        outputs = keras.backend.depthwise_conv2d(
            self.binarize_input(inputs),
            self.binarized_kernel(),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self.bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="edgekit")
class BinaryDense(BinaryLayer, keras.layers.Dense):
    """A ``Dense`` layer with binarized kernel and inputs."""

    scale_axes = (0,)

    def call(self, inputs: Any) -> Any:
        x = self.binarize_input(inputs)
        kernel = self.binarized_kernel()
        if x.shape.rank == 2:
            outputs = tf.matmul(x, kernel)
        else:
            outputs = tf.tensordot(x, kernel, axes=[[x.shape.rank - 1], [0]])
        return self.bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="edgekit")
class BinarySign(keras.layers.Layer):
    """``sign(x)`` with ``sign(0) = +1``, as two TFLite ``SIGN`` ops and an ``ADD``.

    The binarized activation of a deployed binary layer (no gradient: inference only).
    """

    def call(self, inputs: Any) -> Any:
        return _sign(inputs)


# Float layer type -> its binary version; exact types (a Conv2D subclass such as
# Conv2DTranspose computes something else).
_BINARY_OF: dict[type, type] = {
    keras.layers.Conv2D: BinaryConv2D,
    GroupConv2D: BinaryConv2D,
    keras.layers.DepthwiseConv2D: BinaryDepthwiseConv2D,
    keras.layers.Dense: BinaryDense,
}
_CONSTRAINT_KEY = {BinaryDepthwiseConv2D: "depthwise_constraint"}


def _float_class(layer: BinaryLayer) -> type:
    if isinstance(layer, BinaryConv2D):
        return GroupConv2D if getattr(layer, "groups", 1) > 1 else keras.layers.Conv2D
    if isinstance(layer, BinaryDepthwiseConv2D):
        return keras.layers.DepthwiseConv2D
    return keras.layers.Dense


# -- the functional graph --------------------------------------------------------------------


def _has_kernel(layer: Any) -> bool:
    return any(
        hasattr(layer, attr) for attr in ("kernel", "depthwise_kernel", "pointwise_kernel")
    ) and bool(layer.weights)


def _first_and_last(model: Any, calls: list[LayerCall]) -> tuple[set[str], set[str]]:
    """Weighted layers reached from an input, and reaching an output, through no other."""
    raw: dict[str, bool] = {}
    first: set[str] = set()
    for call in calls:
        from_input = call.node.is_input or any(raw.get(t, False) for t in call.inputs)
        weighted = _has_kernel(call.layer)
        if from_input and weighted:
            first.add(call.layer.name)
        for t in call.outputs:
            raw[t] = from_input and not weighted
    to_output = {str(id(t)): True for t in model.outputs}
    last: set[str] = set()
    for call in reversed(calls):
        reaches = any(to_output.get(t, False) for t in call.outputs)
        weighted = _has_kernel(call.layer)
        if reaches and weighted:
            last.add(call.layer.name)
        for t in call.inputs:
            to_output[t] = to_output.get(t, False) or (reaches and not weighted)
    return first, last


def _is_relu(layer: Any) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
    if isinstance(layer, keras.layers.Activation):
        return keras.activations.serialize(layer.activation) in ("relu", "relu6")
    return False


# Layers whose output is non-negative when every input is.
_KEEPS_NON_NEGATIVE = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Flatten,
    keras.layers.Dropout,
    keras.layers.Concatenate,
    keras.layers.Add,
    keras.layers.Multiply,
    ChannelSplit,
)


# -- binarize --------------------------------------------------------------------------------


@dataclass
class BinarizeResult:
    """What :func:`binarize_model` did.

    Attributes:
        binarized: layers now binary (weights and, unless listed in ``float_inputs``, inputs).
        kept_float: weighted layers left float because they are first or last.
        float_inputs: binary layers whose input stays float: it is non-negative (after a ReLU
            and pooling or concatenation, or the image), so its sign would be constant.
        unsupported: weighted layers of a type with no binary version.
        reads_before_relu: binary layers that read the tensor before the ReLU feeding them.
    """

    binarized: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    float_inputs: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    reads_before_relu: list[str] = field(default_factory=list)


def binarize(
    model: Any,
    ste: str = "tanh",
    keep_first: bool = True,
    keep_last: bool = True,
    scale: bool = True,
    clip_latent: bool = True,
) -> tuple[Any, BinarizeResult]:
    """:func:`binarize_model`, also returning what was done to which layer."""
    _check_ste(ste)
    calls = layer_calls(model, PURPOSE)
    producer = {t: call for call in calls for t in call.outputs}
    first, last = _first_and_last(model, calls)
    keep = (first if keep_first else set()) | (last if keep_last else set())
    result = BinarizeResult()
    memo: dict[str, bool] = {}

    def non_negative(tid: str) -> bool:
        if tid not in memo:
            call = producer[tid]
            layer = call.layer
            if call.node.is_input:
                memo[tid] = False
            elif _is_relu(layer) or (
                isinstance(layer, keras.layers.Activation)
                and keras.activations.serialize(layer.activation) in ("sigmoid", "softmax")
            ):
                memo[tid] = True
            elif isinstance(layer, _KEEPS_NON_NEGATIVE):
                memo[tid] = all(non_negative(t) for t in call.inputs)
            else:
                memo[tid] = False
        return memo[tid]

    def convert(call: LayerCall, new: dict[str, Any]) -> list[Any] | None:
        layer = call.layer
        binary_class = _BINARY_OF.get(type(layer))
        if binary_class is None:
            if _has_kernel(layer):
                result.unsupported.append(layer.name)
            return None
        if layer.name in keep:
            result.kept_float.append(layer.name)
            return None
        (tid,) = call.inputs
        source = producer[tid]
        binarize_inputs = True
        if source.node.is_input:
            # The image is not an activation: sign(pixels in [0, 1]) is +1 everywhere.
            binarize_inputs = False
            result.float_inputs.append(layer.name)
        elif _is_relu(source.layer):
            # sign(x) carries the bit of relu(x) > 0; sign(relu(x)) is +1 everywhere.
            (tid,) = source.inputs
            result.reads_before_relu.append(layer.name)
        elif non_negative(tid):
            binarize_inputs = False
            result.float_inputs.append(layer.name)
        config = layer.get_config()
        if clip_latent:
            config[_CONSTRAINT_KEY.get(binary_class, "kernel_constraint")] = LatentClip()
        config.update(ste=ste, scale=scale, binarize_inputs=binarize_inputs)
        clone = binary_class.from_config(config)
        out = clone(new[tid])
        # Latent weights start at the float weights (same variables, same order).
        clone.set_weights(layer.get_weights())
        result.binarized.append(layer.name)
        return [out]

    binary = rebuild(model, convert, PURPOSE)
    log.info(
        "binarized %d layers of '%s' (%d kept float, %d with float inputs)",
        len(result.binarized),
        model.name,
        len(result.kept_float),
        len(result.float_inputs),
    )
    return binary, result


def binarize_model(
    model: Any,
    ste: str = "tanh",
    keep_first: bool = True,
    keep_last: bool = True,
    scale: bool = True,
    clip_latent: bool = True,
) -> Any:
    """The binarized version of a functional Keras model.

    Every ``Conv2D``, grouped conv, ``DepthwiseConv2D`` and ``Dense`` layer becomes its binary
    version (same name, same config) whose latent kernel starts at the float kernel; every
    other layer is copied with its weights. A binary layer fed by a ReLU reads the ReLU's input
    instead (see the module docstring); a ReLU left with no reader drops out of the graph.

    Args:
        model: a functional ``tf_keras`` model, each layer called once (the zoo's models).
        ste: straight-through estimator, ``"tanh"`` or ``"clipped"``.
        keep_first: keep the weighted layers that read the model input in float.
        keep_last: keep the weighted layers that produce the output (the logits) in float.
        scale: scale the signs by ``mean |latent|`` per output channel (XNOR-Net).
        clip_latent: clip latent weights to [-1, 1] after every update.

    Returns:
        A new, uncompiled model; ``model`` is not changed.

    Raises:
        BadInputError: ``ste`` is unknown, or the model is not functional, nests a model or
            calls a layer twice.
    """
    return binarize(model, ste, keep_first, keep_last, scale, clip_latent)[0]


def binary_to_float_model(model: Any) -> Any:
    """An ordinary Keras model computing what the binary ``model`` computes.

    Each binary layer becomes its float layer type (``Conv2D``, ``GroupConv2D``,
    ``DepthwiseConv2D``, ``Dense``) whose kernel is ``±1`` (times the scale), preceded by a
    :class:`BinarySign` layer named ``<layer>_sign`` when its input is binarized. TFLite
    converts it with builtin ops only.

    Args:
        model: a model from :func:`binarize_model` (or any functional model: layers that are
            not binary are copied).

    Returns:
        A new, uncompiled model with the same layer names plus the ``_sign`` layers.

    Raises:
        BadInputError: the model is not functional, nests a model or calls a layer twice.
    """

    def convert(call: LayerCall, new: dict[str, Any]) -> list[Any] | None:
        layer = call.layer
        if not isinstance(layer, BinaryLayer):
            return None
        x = new[call.inputs[0]]
        if layer.binarize_inputs:
            x = BinarySign(name=f"{layer.name}_sign")(x)
        config = layer.get_config()
        for key in ("ste", "scale", "binarize_inputs"):
            config.pop(key)
        config[_CONSTRAINT_KEY.get(type(layer), "kernel_constraint")] = None
        clone = _float_class(layer).from_config(config)
        out = clone(x)
        weights = layer.get_weights()
        weights[_kernel_index(layer)] = layer.binarized_kernel().numpy()
        clone.set_weights(weights)
        return [out]

    return rebuild(model, convert, PURPOSE)


def _kernel_index(layer: BinaryLayer) -> int:
    latent = layer.latent_kernel
    return next(i for i, w in enumerate(layer.weights) if w is latent)  # type: ignore[attr-defined]


def binary_layers(model: Any) -> list[Any]:
    """The binary layers of ``model``, in model order."""
    return [layer for layer in model.layers if isinstance(layer, BinaryLayer)]


# -- the recipe step ---------------------------------------------------------------------------


def _names(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} layers)" if len(names) > most else "")


@register_step(
    "binarize",
    options={
        "ste": Option(
            str,
            "tanh",
            "straight-through estimator of sign's gradient: tanh derivative or clipped identity",
            choices=STE_VARIANTS,
        ),
        "epochs": Option(int, 5, "fine-tuning epochs after binarizing", min=0),
        "learning_rate": Option(float, 1e-3, "fine-tuning learning rate (Adam)", min=0.0, max=1.0),
        "keep_first": Option(bool, True, "keep the first weighted layers in float"),
        "keep_last": Option(bool, True, "keep the last weighted layers (logits) in float"),
        "scale": Option(bool, True, "scale the ±1 kernels by mean |w| per output channel"),
    },
)
def binarize_step(
    model: Any,
    ctx: StepContext,
    ste: str,
    epochs: int,
    learning_rate: float,
    keep_first: bool,
    keep_last: bool,
    scale: bool,
) -> Any:
    """Binarize weights and activations to ±1 (STE training), stored at 1 bit per weight."""
    from edgekit.compress._bitpack import binary_storage

    binary, result = binarize(model, ste, keep_first, keep_last, scale)
    if not result.binarized:
        raise BadInputError(
            f"model '{model.name}' has no layer to binarize (Conv2D, DepthwiseConv2D, Dense) "
            "besides the first and last; set keep_first / keep_last to false to binarize those"
        )
    kept = f"; kept in float: {_names(result.kept_float)}" if result.kept_float else ""
    ctx.note(f"binarized {len(result.binarized)} layers to ±1 weights and activations{kept}")
    if result.reads_before_relu:
        ctx.note(
            f"{len(result.reads_before_relu)} binary layers take the sign of the tensor before "
            "the ReLU that fed them (the sign of a ReLU output is +1 everywhere)"
        )
    if result.float_inputs:
        ctx.note(
            f"layers {_names(result.float_inputs)} read a non-negative tensor (the image, or a "
            "ReLU output after pooling or concatenation) whose sign would be constant: their "
            "weights are binarized, their inputs stay float"
        )
    if result.unsupported:
        ctx.note(
            f"layers {_names(result.unsupported)} stay float: their type has no binary version"
        )
    ctx.say(f"binarize: fine-tuning for {epochs} epochs (ste={ste})")
    ctx.fine_tune(binary, epochs, learning_rate)
    storage = binary_storage(binary)
    ctx.state["binary"] = {
        "packed_bytes": storage.packed_bytes,
        "float32_bytes": storage.float32_bytes,
        "ratio": storage.ratio,
        "scale_bytes": storage.scale_bytes,
        "other_float_bytes": storage.other_float_bytes,
        "file_bytes": storage.file_bytes,
        "layers": list(result.binarized),
    }
    ctx.note(
        f"binarized weights stored at 1 bit: {storage.packed_bytes} bytes instead of "
        f"{storage.float32_bytes} in float32 (1/{1 / storage.ratio:.1f}), plus "
        f"{storage.scale_bytes} bytes of scales and {storage.other_float_bytes} bytes of float "
        f"layers; {LARQ_NOTE}"
    )
    return binary
