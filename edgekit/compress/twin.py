"""The float twin of a compressed model: an ordinary Keras model for the converters that
cannot take the compressed one as it is.

- A **binarized** model (:mod:`edgekit.compress.binary`) computes exactly what its twin
  computes: float layers with ``±1`` kernels (times the scale) and TFLite ``SIGN`` ops. Every
  converter takes the twin; converting the binary layers directly lets the converters see the
  latent kernels and round the sign differently.
- A **quantization-aware** (fake-quant) model keeps TF-MOT's wrappers and quantizers. The
  full-integer TFLite converter reads their ranges and is the path such a model is trained
  for. The other converters cannot: tf2onnx keeps ``FakeQuantWithMinMaxVars``, which ONNX
  Runtime does not run, and the TFLite float converters silently quantize to int8. They take
  the twin: the original architecture with the trained float weights, copied by variable
  name, quantizers removed. Its outputs differ from the fake-quant model's by the quantization
  error, so artifacts made from it are compared numerically with the twin, and by accuracy
  with the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BINARY = "binary"
FAKE_QUANT = "fake_quant"


@dataclass(frozen=True)
class FloatTwin:
    """An ordinary Keras model standing in for ``kind`` model in conversion.

    Attributes:
        model: the twin.
        kind: ``"binary"`` or ``"fake_quant"``.
        exact: the twin computes what the model computes (to float rounding).
        description: one line for reports.
    """

    model: Any
    kind: str
    exact: bool
    description: str

    def used_by(self, takes_fake_quant: bool) -> bool:
        """True when a converter (``takes_fake_quant`` = it reads fake-quant ranges) should
        convert the twin rather than the model."""
        return not (self.kind == FAKE_QUANT and takes_fake_quant)


def float_twin(model: Any) -> FloatTwin | None:
    """The float twin of ``model`` when it holds binary layers or fake-quant wrappers, else
    None (an ordinary model converts as it is).

    Raises:
        BadInputError: the model is not functional (see :mod:`edgekit.models._graph`).
    """
    from edgekit.models._io import _is_fake_quant

    if _is_binary(model):
        from edgekit.compress.binary import binary_to_float_model

        return FloatTwin(
            binary_to_float_model(model),
            BINARY,
            exact=True,
            description="binary layers as float layers with ±1 kernels and SIGN ops",
        )
    if _is_fake_quant(model):
        return FloatTwin(
            strip_fake_quant(model),
            FAKE_QUANT,
            exact=False,
            description="the quantization-aware model without its fake-quant nodes "
            "(trained float weights)",
        )
    return None


def model_for_converter(model: Any, takes_fake_quant: bool) -> Any:
    """The Keras model a converter should be given: ``model``, or its float twin (see the
    module docstring); ``takes_fake_quant`` is the converter's attribute of that name."""
    twin = float_twin(model)
    return twin.model if twin is not None and twin.used_by(takes_fake_quant) else model


def strip_fake_quant(model: Any) -> Any:
    """``model`` (from TF-MOT ``quantize_model`` / ``quantize_apply``) without its quantizers.

    Each ``QuantizeWrapper`` becomes its inner layer, whose variables are copied from the
    wrapper by name; ``QuantizeLayer`` nodes are removed. The result has the layer names,
    structure and float weights of the trained model.

    Raises:
        BadInputError: the model is not functional.
        RuntimeError: a wrapper lacks a variable its inner layer needs (a TF-MOT change).
    """
    from edgekit.models._graph import LayerCall, call_copy, rebuild

    def convert(call: LayerCall, new: dict[str, Any]) -> list[Any] | None:
        kind = type(call.layer).__name__
        if kind == "QuantizeLayer":
            return [new[call.inputs[0]]]
        if kind not in ("QuantizeWrapper", "QuantizeWrapperV2"):
            return None
        wrapper = call.layer
        inner = wrapper.layer
        config = inner.get_config()
        activation = config.get("activation")
        if isinstance(activation, dict) and "QuantizeAwareActivation" in str(
            activation.get("class_name", "")
        ):
            config["activation"] = _activation_name(inner)
        clone, outputs = call_copy(inner, call.node, new, config)
        # Variables are named "<inner layer>/kernel:0" in a fresh wrapper and "kernel:0" in a
        # loaded one; the quantizers' own ("kernel_min:0", "optimizer_step:0") never clash.
        by_name = {_leaf(w.name): w for w in wrapper.weights}
        values = []
        for w in clone.weights:
            source = by_name.get(_leaf(w.name))
            if source is None or tuple(source.shape) != tuple(w.shape):
                raise RuntimeError(
                    f"cannot remove the quantizers of layer '{wrapper.name}': it has no "
                    f"variable '{w.name}' of shape {tuple(w.shape)} (its variables: "
                    f"{', '.join(sorted(by_name))})"
                )
            values.append(source.numpy())
        clone.set_weights(values)
        return outputs

    return rebuild(model, convert, "removing the fake-quant nodes")


def _leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _activation_name(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    inner = getattr(act, "activation", act)  # QuantizeAwareActivation wraps the original
    if type(inner).__name__ == "NoOpActivation":  # TF-MOT's stand-in for a folded "linear"
        return "linear"
    name = getattr(inner, "__name__", None)
    if not name:
        raise RuntimeError(f"cannot tell the activation of layer '{layer.name}'")
    return name


def _is_binary(model: Any) -> bool:
    # A model with binary layers has imported their module; a twin's SIGN layers are not.
    import sys

    binary = sys.modules.get("edgekit.compress.binary")
    return binary is not None and any(isinstance(x, binary.BinaryLayer) for x in model.layers)
