"""Custom layers the zoo shares, and the channel shuffle built from standard layers.

No Lambda layers: models are saved as ``.keras`` and loaded with ``safe_mode=True``, which
refuses Lambda. Custom layers are registered under the ``edgekit`` package so that loading
finds them once ``edgekit.models`` is imported.
"""

from __future__ import annotations

from typing import Any

from edgekit._keras import keras, tf


@keras.saving.register_keras_serializable(package="edgekit")
class ChannelSplit(keras.layers.Layer):
    """Split the last (channel) axis into ``splits`` equal parts; returns a list of tensors.

    Converts to one TFLite ``SPLIT`` op and one ONNX ``Split`` node.
    """

    def __init__(self, splits: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(splits) < 1:
            raise ValueError(f"splits must be >= 1; got {splits}")
        self.splits = int(splits)

    def call(self, inputs: Any) -> list[Any]:
        return tf.split(inputs, self.splits, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> list[tf.TensorShape]:
        shape = tf.TensorShape(input_shape).as_list()
        if shape[-1] is not None:
            shape[-1] //= self.splits
        return [tf.TensorShape(shape) for _ in range(self.splits)]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "splits": self.splits}


@keras.saving.register_keras_serializable(package="edgekit")
class GroupConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` with ``groups > 1`` that runs as one plain convolution op.

    tf_keras runs grouped convolutions inside an XLA-compiled ``tf.function`` (for old CPU
    kernels without groups); that call stays in the exported graph as a ``PartitionedCall``
    that tf2onnx cannot convert. TensorFlow's CPU kernel takes groups natively now, so this
    layer calls the convolution directly. Its weights and config are those of ``Conv2D``.
    """

    def call(self, inputs: Any) -> Any:
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def channel_shuffle(x: Any, groups: int, name: str) -> Any:
    """ShuffleNet's channel shuffle as Reshape -> Permute -> Reshape.

    The channels, seen as ``groups`` rows of ``C/groups``, are transposed. The H and W axes
    are merged first so every tensor stays rank 4 (Edge TPU and some NPUs reject rank 5).
    Layers: ``name_reshape``, ``name_permute``, ``name_restore``.
    """
    height, width, channels = (int(d) for d in x.shape[1:])
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups")
    x = keras.layers.Reshape((height * width, groups, channels // groups), name=f"{name}_reshape")(
        x
    )
    x = keras.layers.Permute((1, 3, 2), name=f"{name}_permute")(x)
    return keras.layers.Reshape((height, width, channels), name=f"{name}_restore")(x)
