"""Weight sharing: TF-MOT k-means and Gaussian-mixture codebooks, their storage size (checked
by hand on a small kernel) and the codebook file, which reads back exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras
from edgekit.compress._bitpack import apply_packed_weights, pack_uint, unpack_uint
from edgekit.compress._steps import StepContext, check_options, get_step
from edgekit.compress.sharing import (
    cluster_gmm,
    cluster_tfmot,
    codebook_size,
    index_bits,
    read_codebook,
    write_codebook,
)
from edgekit.errors import BadInputError, ModelLoadError
from edgekit.models import GroupConv2D, create


def _model(name: str) -> Any:
    keras.utils.set_random_seed(0)
    return create(name, input_shape=(32, 32, 3), classes=10)


def _ctx(data: Any, n: int = 128) -> StepContext:
    small = dataclasses.replace(
        data,
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_val=data.x_val[:32],
        y_val=data.y_val[:32],
    )
    return StepContext(data=small, batch_size=32)


def _dense_model(fc_kernel: np.ndarray) -> Any:
    """Input(8) -> Dense 'fc' (8 units, kernel given) -> Dense 'out' (3 units, random)."""
    inputs = keras.Input((8,), name="input")
    x = keras.layers.Dense(8, name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="small")
    model.get_layer("fc").set_weights([fc_kernel.astype(np.float32), np.zeros(8, np.float32)])
    return model


def _kernels(model: Any) -> dict[str, np.ndarray]:
    return {
        layer.name: layer.get_weights()[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    }


def test_index_bits_and_bit_packing() -> None:
    assert [index_bits(k) for k in (2, 3, 4, 5, 16, 17, 255, 256)] == [1, 2, 2, 3, 4, 5, 8, 8]
    rng = np.random.default_rng(0)
    for bits in range(1, 9):
        values = rng.integers(0, 1 << bits, size=37)
        data = pack_uint(values, bits)
        assert len(data) == -(-37 * bits // 8)
        np.testing.assert_array_equal(unpack_uint(data, bits, 37), values)
    with pytest.raises(ValueError, match="do not fit in 2 bits"):
        pack_uint(np.array([4]), 2)


def test_codebook_size_by_hand_on_a_small_kernel() -> None:
    rng = np.random.default_rng(0)
    levels = np.array([-0.5, -0.1, 0.0, 0.2, 0.7])
    model = _dense_model(rng.choice(levels, size=(8, 8)))  # 64 weights, 5 distinct values

    report = codebook_size(model, 16)
    (fc,) = report.kernels
    assert (fc.layer, fc.weights, fc.distinct, fc.index_bits) == ("fc", 64, 5, 4)
    assert fc.codebook_bytes == 16 * 4  # k float32
    assert fc.index_bytes == 64 * 4 // 8  # 4-bit indices
    assert fc.float32_bytes == 256
    assert report.unclustered == ("out/kernel:0",)  # 24 random values > 16
    assert report.other_float_bytes == 4 * (8 + 24 + 3)  # fc bias, out kernel and bias
    assert report.ratio == pytest.approx((64 + 32) / 256)

    five = codebook_size(model, 5)
    assert (five.codebook_bytes, five.index_bytes) == (20, 24)  # 3-bit indices
    assert codebook_size(model, 4).kernels == ()  # 5 distinct values do not fit 4
    for bad in (1, 257, True, 4.0):
        with pytest.raises(BadInputError, match="clusters must be"):
            codebook_size(model, bad)


def test_codebook_file_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = _dense_model(rng.choice(np.linspace(-1, 1, 7), size=(8, 8)))
    path = tmp_path / "small.ekpack"
    report = write_codebook(model, path, 8)
    assert report == codebook_size(model, 8)
    assert not list(tmp_path.glob(".*tmp"))
    packed = read_codebook(path)
    for layer in model.layers:
        for got, want in zip(packed.weights.get(layer.name, []), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)

    twin = _dense_model(np.zeros((8, 8)))
    apply_packed_weights(twin, packed)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_array_equal(twin(x).numpy(), model(x).numpy())

    with pytest.raises(BadInputError, match="no kernel with at most 4 distinct values"):
        write_codebook(model, tmp_path / "none.ekpack", 4)
    (tmp_path / "junk.ekpack").write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not an edgekit weight pack"):
        read_codebook(tmp_path / "junk.ekpack")


def test_kmeans_leaves_at_most_k_values_per_kernel(digits32: Any) -> None:
    model = _model("mobilenet_v2_tiny")
    original = [w.copy() for w in model.get_weights()]
    ctx = _ctx(digits32)
    out = cluster_tfmot(model, ctx, clusters=16, init="kmeans_plus_plus", epochs=1)

    assert ctx.state["clustered"] == 16
    assert [layer.name for layer in out.layers] == [layer.name for layer in model.layers]
    assert [type(layer) for layer in out.layers] == [type(layer) for layer in model.layers]
    kernels = _kernels(out)
    assert len(kernels) == 16
    for name, kernel in kernels.items():
        assert np.unique(kernel).size <= 16, name
    report = codebook_size(out, 16)
    assert {k.layer for k in report.kernels} == set(kernels)
    assert all(k.distinct <= 16 and k.index_bits == 4 for k in report.kernels)
    assert any("depthwise" in note for note in ctx.notes)
    for a, b in zip(model.get_weights(), original, strict=True):  # the input is untouched
        np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(out(digits32.x_test[:4]).numpy()))


def test_kmeans_skips_group_convs_with_a_note(digits32: Any) -> None:
    model = _model("shufflenet_v1_tiny")
    ctx = _ctx(digits32)
    out = cluster_tfmot(model, ctx, clusters=16, init="linear", epochs=0)
    groups = [layer.name for layer in model.layers if isinstance(layer, GroupConv2D)]
    assert groups
    (note,) = [n for n in ctx.notes if "TF-MOT cannot cluster" in n]
    for name in groups:
        assert f"{name} (GroupConv2D)" in note
        assert isinstance(out.get_layer(name), GroupConv2D)
        np.testing.assert_array_equal(
            out.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0]
        )
    for name in ("stem_conv", "logits"):
        assert np.unique(out.get_layer(name).get_weights()[0]).size <= 16


def test_kmeans_keeps_pruned_zeros_when_preserving_sparsity(digits32: Any) -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Conv2D(8, 3, strides=2, name="c1")(inputs)
    x = keras.layers.ReLU(name="c1_relu")(keras.layers.BatchNormalization(name="c1_bn")(x))
    x = keras.layers.Conv2D(16, 3, strides=2, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    model = keras.Model(inputs, x, name="pruned")
    kernel, bias = model.get_layer("c2").get_weights()
    zeros = np.random.default_rng(0).random(kernel.shape) < 0.5
    kernel[zeros] = 0.0
    model.get_layer("c2").set_weights([kernel, bias])

    ctx = _ctx(digits32)
    ctx.state["pruned"] = True
    step = get_step("cluster")  # kmeans, preserve_sparsity by default
    out = step.fn(model, ctx, **check_options(step, {"clusters": 8, "epochs": 1}, "recipe"))
    clustered = out.get_layer("c2").get_weights()[0]
    assert np.all(clustered[zeros] == 0.0)
    assert np.unique(clustered).size <= 8
    assert ctx.state["clustered"] == 8
    assert {k["layer"] for k in ctx.state["codebook"]["kernels"]} == {"c1", "c2", "logits"}


def test_gmm_replaces_each_weight_by_its_component_mean() -> None:
    rng = np.random.default_rng(2)
    side = rng.random((8, 8)) < 0.5
    kernel = np.where(side, -1.0, 1.0) + rng.normal(0, 0.01, size=(8, 8))
    model = _dense_model(kernel)
    out = cluster_gmm(model, clusters=2, layers=["fc"], seed=0)
    got = out.get_layer("fc").get_weights()[0]
    fc = model.get_layer("fc").get_weights()[0]
    np.testing.assert_allclose(got[side], fc[side].mean(), atol=1e-4)
    np.testing.assert_allclose(got[~side], fc[~side].mean(), atol=1e-4)
    np.testing.assert_array_equal(  # not listed: unchanged
        out.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0]
    )
    with pytest.raises(BadInputError, match="has no layer 'fc2'"):
        cluster_gmm(model, clusters=2, layers=["fc2"])


def test_gmm_codebook_of_a_zoo_model(tmp_path: Path) -> None:
    model = _model("squeezenet_tiny")
    kernel, *rest = model.get_layer("block2_expand3x3").get_weights()
    zeros = np.random.default_rng(0).random(kernel.shape) < 0.3
    kernel[zeros] = 0.0
    model.get_layer("block2_expand3x3").set_weights([kernel, *rest])

    out = cluster_gmm(model, clusters=16, seed=0, preserve_zeros=True)
    for name, kernel in _kernels(out).items():
        before = model.get_layer(name).get_weights()[0]
        assert np.unique(kernel).size <= 16, name
        assert np.abs(kernel - before).mean() < 0.3 * before.std(), name
    assert np.all(out.get_layer("block2_expand3x3").get_weights()[0][zeros] == 0.0)
    report = write_codebook(out, tmp_path / "sq.ekpack", 16)
    assert len(report.kernels) == len(_kernels(out))
    assert report.ratio < 0.2


def test_cluster_step_records_the_codebook(digits32: Any) -> None:
    step = get_step("cluster")
    options = check_options(step, {"method": "gmm", "clusters": 8}, "recipe.yaml")
    for bad in ({"clusters": 300}, {"method": "kmedoids"}, {"init": "kmeans++"}):
        with pytest.raises(BadInputError, match="is not allowed"):
            check_options(step, bad, "recipe.yaml")

    ctx = _ctx(digits32)
    step.fn(_model("squeezenet_tiny"), ctx, **options)
    codebook = ctx.state["codebook"]
    assert ctx.state["clustered"] == 8
    assert codebook["index_bits"] == 3 and codebook["kernels"]
    assert all(k["distinct"] <= 8 for k in codebook["kernels"])
    assert any("epochs ignored" in note for note in ctx.notes)
