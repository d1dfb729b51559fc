"""Loading and saving Keras models, refusing code-carrying formats unless trusted."""

from __future__ import annotations

import importlib
import logging
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit._io import set_default_mode
from edgekit.errors import ModelLoadError

log = logging.getLogger(__name__)

TRUST_HINT = "pass --trust-model only if you trust where the file came from"


def load_keras_model(path: str | Path, trust: bool = False) -> Any:
    """Load a Keras 2 model for conversion.

    ``.keras`` files load in Keras safe mode (no Lambda layers, no arbitrary code) unless
    ``trust`` is set; legacy ``.h5`` files and SavedModel folders can carry code and load only
    with ``trust``.

    Args:
        path: a ``.keras`` file, an ``.h5`` file or a SavedModel folder.
        trust: allow formats and layers that can run code.

    Returns:
        The ``tf_keras.Model``.

    Raises:
        ModelLoadError: missing path, not a model, or code-carrying content without ``trust``.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(
            f"model '{p}' does not exist; pass a .keras file (or omit MODEL "
            "to use the built-in default)"
        )
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelLoadError(f"'{p}' is a folder but not a SavedModel (no saved_model.pb)")
        if not trust:
            raise ModelLoadError(
                f"'{p}' is a SavedModel, which can run arbitrary code; {TRUST_HINT}"
            )
    elif p.suffix == ".h5":
        if not trust:
            raise ModelLoadError(f"'{p}' is a legacy .h5 model, which can carry code; {TRUST_HINT}")
    elif p.suffix == ".keras":
        if not zipfile.is_zipfile(p):
            raise ModelLoadError(
                f"'{p}' is not a Keras model: a .keras file is a zip archive, "
                "this one is not (truncated or another format?)"
            )
    else:
        raise ModelLoadError(
            f"'{p}' is not a Keras model; expected a .keras file, an .h5 file or a SavedModel folder"
        )

    import edgekit.models  # noqa: F401  (registers edgekit's custom layers)
    from edgekit._keras import keras
    from edgekit.models import _families  # noqa: F401

    if _config_mentions(p, _BINARY_CLASSES):
        # Binarized models hold edgekit's binary layers, registered when their module loads.
        importlib.import_module("edgekit.compress.binary")
    try:
        with _quantize_scope(_has_fake_quant(p)):
            if p.suffix == ".keras":
                model = keras.models.load_model(p, compile=False, safe_mode=not trust)
            else:
                model = keras.models.load_model(p, compile=False)
    except Exception as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise ModelLoadError(
                f"'{p}' contains a Lambda layer or other code that safe mode refuses; {TRUST_HINT}"
            ) from err
        raise ModelLoadError(f"'{p}' could not be loaded as a Keras model: {msg}") from err
    check_classifier(model, str(p))
    return model


def check_classifier(model: Any, source: str) -> None:
    """Require one image input (H, W, C) and one (classes,) output.

    Raises:
        ModelLoadError: the model has another shape of inputs or outputs.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelLoadError(
            f"model '{source}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "edgekit deploys image classifiers with one input and one output"
        )
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or any(d is None for d in in_shape[1:]):
        raise ModelLoadError(
            f"model '{source}' input shape is {in_shape}; expected (batch, height, width, channels) "
            "with fixed height, width and channels"
        )
    if len(out_shape) != 2:
        raise ModelLoadError(
            f"model '{source}' output shape is {out_shape}; expected (batch, classes)"
        )


def save_keras_model(model: Any, path: str | Path) -> Path:
    """Save ``model`` in the ``.keras`` format through a temporary file and a rename."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        if _is_fake_quant(model):
            # A trained TF-MOT wrapper can hold more variables than a loaded one expects
            # (its quantizers are built twice); a clone holds exactly what loading builds.
            from edgekit._keras import keras

            with _quantize_scope(True):
                copy = keras.models.clone_model(model)
                copy.set_weights(model.get_weights())
                copy.save(tmp)
        else:
            with _network_only(model):
                model.save(tmp)
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def _network_only(model: Any) -> Iterator[None]:
    """Detach what ``compile`` attached while ``model`` is written.

    The .keras format has no include_optimizer switch: Adam's two slots per weight would
    triple the file, and the compile config names the loss, which may be a function of
    edgekit's that Keras cannot serialize. Saving an uncompiled clone instead costs three
    times as long as the save itself (seconds over a search's proposals); fake-quant models
    still take that way.
    """
    optimizer = getattr(model, "optimizer", None)
    compiled = getattr(model, "_is_compiled", False)
    try:
        if optimizer is not None:
            model.optimizer = None
        model._is_compiled = False  # get_compile_config() returns None
        yield
    finally:
        if optimizer is not None:
            model.optimizer = optimizer
        model._is_compiled = compiled


# Quantization-aware (fake-quant) models hold TF-MOT's wrapper layers and quantizers; Keras
# finds those classes only inside TF-MOT's quantize_scope. TF-MOT takes seconds to import, so
# it is imported only for such models. Safe mode stays on: the scope adds classes, not code.
_TFMOT_CLASSES = (b'"QuantizeWrapperV2"', b'"QuantizeWrapper"', b'"QuantizeLayer"')


_BINARY_CLASSES = (b'"edgekit>Binary', b'"edgekit>LatentClip"')


def _has_fake_quant(path: Path) -> bool:
    return _config_mentions(path, _TFMOT_CLASSES)


def _config_mentions(path: Path, names: tuple[bytes, ...]) -> bool:
    if path.suffix != ".keras":
        return False
    try:
        with zipfile.ZipFile(path) as z:
            config = z.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False  # load_model reports what is wrong with the file
    return any(name in config for name in names)


def _is_fake_quant(model: Any) -> bool:
    return any(
        type(layer).__module__.startswith("tensorflow_model_optimization")
        or type(layer) in _QUANTIZE_LAYER
        for layer in model.layers
    )


@contextmanager
def _quantize_scope(needed: bool) -> Iterator[None]:
    if not needed:
        yield
        return
    import tensorflow_model_optimization as tfmot

    from edgekit._keras import keras

    loadable = {"QuantizeLayer": _loadable_quantize_layer()}
    with tfmot.quantization.keras.quantize_scope(), keras.utils.custom_object_scope(loadable):
        yield


_QUANTIZE_LAYER: list[Any] = []


def _loadable_quantize_layer() -> Any:
    """TF-MOT's QuantizeLayer, loadable from ``.keras``.

    Its ``build`` never marks the layer built, so loading builds it twice (once from the
    saved build config, once when the model is wired) and finds 5 variables where the file
    has 3. This subclass skips the first build; the layer is built when the model is wired.
    """
    if not _QUANTIZE_LAYER:
        from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer

        class QuantizeLayer(quantize_layer.QuantizeLayer):
            def build_from_config(self, config: dict[str, Any]) -> None:
                return None

        _QUANTIZE_LAYER.append(QuantizeLayer)
    return _QUANTIZE_LAYER[0]
