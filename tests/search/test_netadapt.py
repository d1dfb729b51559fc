"""NetAdapt: the schedule, the search for the fewest channels, budgets, real tiny searches
(latency table and MACs), resume after a kill, the process pool, an unreachable budget, and
bad input through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras
from edgekit.cli._main import cli, main
from edgekit.cli._search_cmd import _print_report, search_group
from edgekit.compress import count_macs, prunable_groups, prune_channels
from edgekit.errors import BadInputError, RuntimeUnavailableError
from edgekit.measure.lut import SCHEMA, load_profile, predict_latency, save_profile, zoo_grid
from edgekit.models import create
from edgekit.models._io import load_keras_model, save_keras_model
from edgekit.search import (
    STATE,
    LocalPoolExecutor,
    Meter,
    NetAdaptOptions,
    SerialExecutor,
    ZooSpec,
    fewest_channels_removed,
    fine_tune_steps,
    iteration_target,
    largest_feasible,
    make_executor,
    netadapt,
    netadapt_report,
    parse_budget,
    reduction_schedule,
    resource_reduction,
    resume,
    train_from_scratch,
)
from edgekit.search._loop import latency_margin
from edgekit.search._resources import plan_evaluator
from edgekit.train import TrainConfig, train_model

if "search" not in cli.commands:
    cli.add_command(search_group)

# MACs (primary) and size together; 2 proposals per iteration, 2 batches each.
MACS_RUN = {
    "resources": ("macs", "size"),
    "budgets": ("0.8x", "0.998x"),
    "proposals": 2,
    "short_steps": 2,
    "long_epochs": 0,
    "init_fraction": 0.1,
    "decay": 1.0,
}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture(scope="module")
def reference(digits32: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """mobilenet_v2_tiny trained 2 epochs (well above chance is not needed here)."""
    keras.utils.set_random_seed(0)  # the initial weights too: every run searches the same model
    model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
    train_model(model, digits32, TrainConfig(epochs=2, seed=0))
    return model, save_keras_model(model, tmp_path_factory.mktemp("ref") / "tiny.keras")


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A look-up table for mobilenet_v2_tiny's layers at widths 0.5 and 1 (so that pruned
    channel counts in between interpolate), 32x32, int8.

    Its entries are synthetic (1 us + 1 ns per unit of work): building a real one takes
    most of a minute (tested in tests/measure/test_lut.py), and the search must only follow
    the table, whatever it holds.
    """
    keys = zoo_grid(["mobilenet_v2_tiny"], [0.5, 1.0], 32, "int8", [10])
    profile = {
        "schema": SCHEMA,
        "precision": "int8",
        "input_size": 32,
        "overhead_ms": 0.01,
        "calibration": {"scale": 1.0, "models": []},
        "device": {"threads": 1},
        "entries": [{**k.as_dict(), "ms": 1e-3 + 1e-6 * k.work} for k in keys],
    }
    return save_profile(profile, tmp_path_factory.mktemp("lut") / "tiny_int8.json")


@pytest.fixture(scope="module")
def uninterrupted(
    reference: tuple[Any, Path], digits32: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("na") / "run"
    return netadapt(reference[0], digits32, out, NetAdaptOptions(**MACS_RUN))


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """An iteration record without what legitimately differs between runs (wall time)."""
    out = {k: v for k, v in record.items() if k not in ("seconds", "phase_seconds")}
    for rows in ("proposals", "screened"):
        if rows in out:
            out[rows] = [{k: v for k, v in p.items() if k != "seconds"} for p in out[rows]]
    return out


def _channels(model: Any) -> dict[str, int]:
    """Channels of each prunable group of a model, or of the model saved at a path."""
    if isinstance(model, (str, Path)):
        model = load_keras_model(model)
    return {g.name: g.channel_count for g in prunable_groups(model)}


# --------------------------------------------------------------------------- pure parts


def test_reduction_schedule_decays_from_the_initial_fraction() -> None:
    assert resource_reduction(10.0, 1, 0.2, 0.5) == pytest.approx(2.0)
    assert reduction_schedule(10.0, 0.2, 0.5, 4) == pytest.approx([2.0, 1.0, 0.5, 0.25])
    assert reduction_schedule(8.0, 0.1, 1.0, 3) == pytest.approx([0.8, 0.8, 0.8])
    with pytest.raises(ValueError):
        resource_reduction(10.0, 0, 0.2, 0.5)
    # Each target is the previous resource minus ΔR_i, never below the budget.
    assert iteration_target(5.0, 10.0, 2.0) == 8.0
    assert iteration_target(9.0, 10.0, 2.0) == 9.0
    r, targets = 10.0, []
    for delta in reduction_schedule(10.0, 0.2, 0.9, 12):
        r = iteration_target(6.5, r, delta)
        targets.append(r)
    assert targets == sorted(targets, reverse=True) and min(targets) == 6.5


def test_largest_feasible_finds_the_fewest_removed_and_never_exceeds() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        values = np.sort(rng.random(n + 1) * 100)
        if trial % 3 == 0:  # near-linear, as a resource in one group's channels is
            values = 10 + np.cumsum(1 + 0.1 * rng.random(n + 1))
        unknown_below = int(rng.integers(-1, n // 2 + 1)) if trial % 4 == 0 else -1
        target = float(rng.uniform(values[0] - 5, values[n] - 1e-6))
        calls: list[int] = []

        def evaluate(i: int, values: Any = values, calls: list[int] = calls, ub: int = unknown_below) -> Any:  # fmt: skip
            calls.append(i)
            return None if i <= ub else {"r": float(values[i])}

        found = largest_feasible(n, evaluate, {"r": target}, {"r": float(values[n])})
        ok = [i for i in range(n) if i > unknown_below and values[i] <= target]
        if not ok:
            assert found is None
            continue
        assert found is not None, (n, target)
        index, got = found
        assert index == max(ok) and got["r"] <= target and index in calls
        assert len(calls) <= 2 * math.ceil(math.log2(n + 1)) + 2, (n, len(calls))


@pytest.mark.parametrize(
    ("text", "resource", "relative", "absolute"),
    [
        ("0.5x", "latency", 0.5, None),
        ("1x", "macs", 1.0, None),
        ("4ms", "latency", None, 4.0),
        ("800us", "latency", None, 0.8),
        ("2.5", "latency", None, 2.5),
        ("2M", "macs", None, 2e6),
        ("2000000", "macs", None, 2e6),
        ("1.5g", "macs", None, 1.5e9),
        ("300KB", "size", None, 3e5),
        ("1.2MB", "size", None, 1.2e6),
        ("512KiB", "size", None, 512 * 1024),
    ],
)
def test_budgets_parse(text: str, resource: str, relative: Any, absolute: Any) -> None:
    b = parse_budget(text, resource)
    assert b.relative == relative
    assert b.absolute == pytest.approx(absolute) if absolute else b.absolute is None


@pytest.mark.parametrize(
    ("text", "resource", "says"),
    [
        ("fast", "latency", "cannot read latency budget 'fast'"),
        ("4MB", "latency", "cannot read latency budget"),
        ("2ms", "macs", "cannot read MACs budget"),
        ("1.5x", "latency", "not a share in (0, 1]"),
        ("0x", "size", "not a share in (0, 1]"),
        ("0ms", "latency", "must be > 0"),
        ("0.5x", "energy", "unknown resource 'energy'"),
    ],
)
def test_bad_budgets_say_what_and_how(text: str, resource: str, says: str) -> None:
    with pytest.raises(BadInputError) as e:
        parse_budget(text, resource)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_executors_default_to_a_pool_and_say_what_ray_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert make_executor(1).name == "serial"
    assert isinstance(make_executor(2), LocalPoolExecutor)
    default = make_executor()  # a pool wherever there is more than one core
    assert default.name == ("process_pool" if (os.cpu_count() or 1) > 1 else "serial")
    with pytest.raises(BadInputError, match="--workers must be >= 1"):
        make_executor(0)
    with pytest.raises(BadInputError, match="exclude each other"):
        make_executor(2, ray_address="auto")
    with pytest.raises(BadInputError, match="--ray-device-resource needs --ray-address"):
        make_executor(None, ray_device_resource="coral")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgekit\[ray\]'"):
        make_executor(None, ray_address="auto")


# --------------------------------------------------------------------------- proposals


def test_proposals_keep_channel_counts_to_the_channel_block(reference: tuple[Any, Path]) -> None:
    """With a block of 8, the kept count is the largest multiple of 8 that meets the target:
    the same network as the unaligned answer rounded down to the block."""
    model = reference[0]
    r0 = float(count_macs(model))
    group = next(g for g in prunable_groups(model) if g.name == "head_conv")
    target = {"macs": 0.97 * r0}
    free = fewest_channels_removed(model, group, target, ["macs"], Meter(), values={"macs": r0})
    aligned = fewest_channels_removed(
        model, group, target, ["macs"], Meter(), values={"macs": r0}, multiple=8
    )
    assert free is not None and aligned is not None
    assert free[0] % 8 != 0, "pick a target whose free answer is unaligned"
    assert aligned[0] == free[0] // 8 * 8 and aligned[1]["macs"] <= target["macs"]
    assert aligned[1]["macs"] == count_macs(prune_channels(model, {"head_conv": aligned[0]}))


def test_macs_proposal_removes_as_few_channels_as_the_target_needs(
    reference: tuple[Any, Path],
) -> None:
    model = reference[0]
    r0 = float(count_macs(model))
    meter = Meter()
    groups = {g.name: g for g in prunable_groups(model)}
    planned = plan_evaluator(model, ["macs"], meter)  # counts plans without building them
    assert planned is not None
    for name, share in (("block2_expand", 0.95), ("block7_expand", 0.97), ("head_conv", 0.99)):
        target = {"macs": share * r0}
        group = groups[name]
        found = fewest_channels_removed(model, group, target, ["macs"], meter, values={"macs": r0})
        assert found is not None, name
        fast = fewest_channels_removed(model, group, target, ["macs"], meter, planned=planned)
        assert fast == found, name
        kept, values = found
        assert kept < group.channel_count and kept % group.divisor == 0
        assert count_macs(prune_channels(model, {name: kept})) == values["macs"] <= target["macs"]
        one_more = prune_channels(model, {name: kept + group.divisor})
        assert kept + group.divisor == group.channel_count or count_macs(one_more) > target["macs"]
    # Below what the group alone can reach: no proposal.
    assert fewest_channels_removed(model, groups["head_conv"], {"macs": 0.5 * r0}, ["macs"], meter) is None  # fmt: skip


def test_a_plan_is_counted_without_building_it_unless_a_changed_layer_is_not_modelled() -> None:
    """MACs and size of a plan come from per-layer formulas (tests/compress/test_channels.py
    holds them equal to the built network's on every zoo family); a pruned layer the formulas
    do not model (PReLU's per-channel slopes here) makes the evaluator build the network."""
    from edgekit.compress import PlannedChannels
    from edgekit.models import RechanneledCost, count_model

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(8, 3, name="c1")(x)
    y = keras.layers.PReLU(shared_axes=[1, 2], name="act")(y)
    y = keras.layers.Conv2D(6, 1, name="c2")(y)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D()(y))
    model = keras.Model(x, y)
    planned, counted = PlannedChannels(model), RechanneledCost(model)
    evaluate = plan_evaluator(model, ["macs", "size"], Meter(precision="fp32"))
    assert evaluate is not None
    for plan, modelled in (({"c2": 3}, True), ({"c1": 4}, False), ({"c1": 4, "c2": 3}, False)):
        built = count_model(prune_channels(model, plan))
        fast = counted.cost(planned.layer_channels(plan))
        assert fast == ((built.macs, built.params) if modelled else None), plan
        assert evaluate(plan) == {"macs": built.macs, "size": 4 * built.params}, plan


def test_a_proposal_is_ranked_with_batchnorm_statistics_of_its_own(
    trained_tiny: tuple[Any, Path], digits32: Any, tmp_path: Path
) -> None:
    """The accuracy that ranks a proposal is taken with BatchNorm statistics re-estimated
    on the pruned network, not the unpruned network's (shown without fine-tuning, whose
    2 batches would move the statistics too)."""
    from edgekit.search._executor import ProposalTask, run_proposal, val_scores

    _, path = trained_tiny
    plan = {"block3_expand": 8, "stem_conv": 8}

    def scores(bn_batches: int, steps: int) -> tuple[tuple[float, float], tuple[float, float]]:
        task = ProposalTask(
            index=0, model_path=str(path), plan=plan, seed=0, steps=steps,
            out_path=str(tmp_path / f"p{bn_batches}_{steps}.keras"), bn_batches=bn_batches,
        )  # fmt: skip
        result = run_proposal(task, digits32)
        return (result.accuracy, result.loss), val_scores(
            load_keras_model(result.out_path), digits32
        )

    (stale, stale_loss), _ = scores(0, 0)
    (fresh, fresh_loss), saved = scores(10, 0)
    assert fresh >= stale + 0.25, (stale, fresh)  # measured: 0.10 -> 0.59
    assert fresh_loss < stale_loss, (stale_loss, fresh_loss)
    assert saved == (fresh, fresh_loss)  # the saved proposal holds the re-estimated statistics


def test_a_fine_tuned_proposal_is_re_estimated_only_after_its_fine_tuning(
    trained_tiny: tuple[Any, Path], digits32: Any, tmp_path: Path
) -> None:
    """Re-estimating BatchNorm statistics before the fine-tuning as well would change
    nothing (training-mode BatchNorm normalizes with each batch's own statistics, and the
    re-estimation after it replaces the moving ones whole), so it is not done: the result
    is that of pruning, re-estimating, fine-tuning and re-estimating again."""
    from edgekit.search._executor import ProposalTask, run_proposal, val_scores
    from edgekit.train import recalibrate_batchnorm

    _, path = trained_tiny
    plan = {"block3_expand": 8, "stem_conv": 8}
    task = ProposalTask(
        index=0, model_path=str(path), plan=plan, seed=3, steps=4,
        out_path=str(tmp_path / "p.keras"), bn_batches=5,
    )  # fmt: skip
    result = run_proposal(task, digits32)
    twice = prune_channels(load_keras_model(path), plan)
    recalibrate_batchnorm(twice, digits32, 5, seed=3)
    fine_tune_steps(twice, digits32, 4, seed=3)
    recalibrate_batchnorm(twice, digits32, 5, seed=3)
    assert (result.accuracy, result.loss) == val_scores(twice, digits32)
    saved = load_keras_model(result.out_path)
    for ours, theirs in zip(saved.get_weights(), twice.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)  # moving statistics included


def test_a_traced_fine_tuning_trains_as_the_eager_one_and_only_large_work_is_traced(
    trained_tiny: tuple[Any, Path], digits32: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same steps, seed and network give the same weights whether the step runs eagerly
    or traced (up to float rounding: a graph may fuse ops); which one runs follows the work."""
    from edgekit.search import _executor

    _, path = trained_tiny
    plan = {"block3_expand": 8}
    runs = {}
    for name, threshold in (("eager", float("inf")), ("traced", 0.0)):
        monkeypatch.setattr(_executor, "TRACE_MIN_MACS", threshold)
        model = prune_channels(load_keras_model(path), plan)
        assert _executor._traced(model, 3, 32) is (name == "traced")
        runs[name] = (fine_tune_steps(model, digits32, 3, seed=5)["loss"][0], model)
    (eager_loss, eager), (traced_loss, traced) = runs["eager"], runs["traced"]
    untouched = prune_channels(load_keras_model(path), plan)
    moved = 0.0
    for ours, theirs, before in zip(
        traced.get_weights(), eager.get_weights(), untouched.get_weights(), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5)
        moved = max(moved, float(np.max(np.abs(theirs - before))))
    assert moved > 1e-4  # both trained (three Adam steps at 1e-3 move weights by ~1e-3)
    assert traced_loss == pytest.approx(eager_loss, rel=1e-4)
    monkeypatch.undo()
    # The defaults: a tiny network's few steps run eagerly; more than EAGER_STEPS are traced,
    # and so are a few steps of a network as large as the benchmark's (MobileNet v2, 176 px).
    tiny = load_keras_model(path)
    assert not _executor._traced(tiny, 15, 32) and _executor._traced(tiny, 21, 32)
    big = create("mobilenet_v2", input_shape=(176, 176, 3), classes=10)
    assert _executor._traced(big, 8, 32) and not _executor._traced(big, 1, 32)


def test_validation_scores_are_the_accuracy_and_the_cross_entropy(
    trained_tiny: tuple[Any, Path], digits32: Any
) -> None:
    from edgekit._keras import tf
    from edgekit.search._executor import LOSS_DECIMALS, val_scores

    model, _ = trained_tiny
    accuracy, loss = val_scores(model, digits32)
    probs = model.predict(digits32.x_val, verbose=0)
    expected = tf.keras.losses.SparseCategoricalCrossentropy()(digits32.y_val, probs)
    assert loss == pytest.approx(float(expected), abs=2 * 10**-LOSS_DECIMALS)
    assert accuracy == pytest.approx(np.mean(np.argmax(probs, axis=1) == digits32.y_val))
    assert 0.0 < loss < 2.3  # trained: better than a uniform guess over 10 classes


def test_equally_accurate_proposals_are_decided_by_the_validation_loss() -> None:
    from edgekit.search._loop import Proposal, proposal_rank

    def proposal(order: int, accuracy: float, loss: float, latency: float) -> Proposal:
        return Proposal(f"g{order}", 16, 8, {"latency": latency}, order, accuracy, loss)

    def best(*proposals: Proposal) -> int:
        return min(proposals, key=lambda p: proposal_rank(p, "latency")).order

    # the most accurate wins whatever its loss and latency
    assert best(proposal(0, 0.98, 0.05, 1.0), proposal(1, 0.99, 0.30, 1.2)) == 1
    # equally accurate: the lower loss wins, even at a higher latency
    assert best(proposal(0, 0.99, 0.08, 1.0), proposal(1, 0.99, 0.05, 1.2)) == 1
    # equal accuracy and loss: the lower latency, then the earlier proposal
    assert best(proposal(0, 0.99, 0.05, 1.2), proposal(1, 0.99, 0.05, 1.0)) == 1
    assert best(proposal(0, 0.99, 0.05, 1.0), proposal(1, 0.99, 0.05, 1.0)) == 0
    # a proposal without a loss ranks after an equally accurate one with a loss
    assert best(proposal(0, 0.99, float("nan"), 0.5), proposal(1, 0.99, 0.40, 1.0)) == 1


def test_a_step_too_few_groups_can_make_is_halved_not_the_end(
    reference: tuple[Any, Path], digits32: Any, tmp_path: Path
) -> None:
    """A scheduled reduction of 80% of the MACs is more than pruning any one group removes,
    and half of it only one group can make: the iteration halves its step until
    --proposals groups can make it, else takes the largest step with the most proposals,
    rather than end the search or force the one pruning that fits."""
    r0 = float(count_macs(reference[0]))
    k = 3
    options = NetAdaptOptions(
        budgets=("0.3x",), resources=("macs",), proposals=k, short_steps=1, long_epochs=0,
        init_fraction=0.8, decay=1.0, max_iterations=1, measure=False,
    )  # fmt: skip
    report = netadapt(reference[0], digits32, tmp_path / "run", options)
    (first,) = report["iterations"]
    groups = prunable_groups(reference[0])
    steps = (1.0, 0.5, 0.25, 0.125)
    meter = Meter()
    priced = plan_evaluator(reference[0], ["macs"], meter)  # no rebuild per candidate
    cache: dict[tuple[str, int], Any] = {}
    can = {}  # how many groups can make each step
    for step in steps:
        target = {"macs": max(0.3 * r0, r0 * (1 - 0.8 * step))}
        can[step] = sum(
            fewest_channels_removed(
                reference[0], g, target, ["macs"], meter, cache=cache, planned=priced
            )
            is not None
            for g in groups
        )
    assert can[1.0] == 0 and can[0.5] < k, can  # else this tests nothing
    enough = [s for s in steps if can[s] >= k]
    expected = enough[0] if enough else max(steps, key=lambda s: (can[s], s))
    assert first["step"] == expected, (first["step"], can)
    assert len(first["proposals"]) == min(k, can[expected])
    assert first["targets"]["macs"] == pytest.approx(max(0.3 * r0, r0 * (1 - 0.8 * expected)))
    assert first["resources"]["macs"] <= first["targets"]["macs"]


def test_the_latency_margin_follows_the_tables_recent_error_and_a_missed_target() -> None:
    """An iteration aims under the budget by the median of the last five iterations' table
    errors against measurement; by the last one's, if larger, when that network measured
    over its target (near a budget, small cuts save less than the table says); 5% at most."""

    def it(predicted: float, measured: float, target: float) -> dict[str, Any]:
        return {
            "resources": {"latency": predicted},
            "latency_ms_measured": measured,
            "targets": {"latency": target},
        }

    assert latency_margin([]) == 0.0
    steady = [it(1.0, 1.01, 1.0), it(1.0, 0.98, 1.0), it(1.0, 1.03, 1.05), it(1.0, 0.99, 1.0)]
    assert latency_margin(steady) == pytest.approx(0.015)  # median of 1, 2, 3 and 1 %
    # Six iterations: the first (40% off) is no longer among the last five (with it, the
    # median would be 2.5%).
    assert latency_margin([it(1.0, 1.4, 2.0), *steady, it(1.0, 1.03, 1.05)]) == pytest.approx(0.02)
    # The last network aimed at 0.525 ms, predicted 0.52, measured 0.552: 6.2% off, capped.
    creeping = [*steady, it(0.52, 0.552, 0.525)]
    assert latency_margin(creeping) == pytest.approx(0.05)
    assert latency_margin([*steady, it(0.52, 0.54, 0.525)]) == pytest.approx(0.54 / 0.52 - 1)
    # Off by as much but under its target: the median counts.
    assert latency_margin([*steady, it(0.52, 0.50, 0.525)]) == pytest.approx(0.02)
    # Under its target in the short timing, over it in the longer confirming one.
    confirmed = {**it(0.52, 0.50, 0.525), "latency_ms_confirmed": 0.533}
    assert latency_margin([*steady, confirmed]) == pytest.approx(0.533 / 0.52 - 1)
    # An iteration without a measurement (no device) gives no error.
    assert latency_margin([*steady, {"resources": {"latency": 0.5}, "targets": {}}]) == (
        pytest.approx(0.015)
    )


def test_latency_proposal_never_exceeds_the_target_per_the_table(
    reference: tuple[Any, Path], tiny_profile: Path
) -> None:
    model = reference[0]
    meter = Meter(profile=load_profile(tiny_profile))
    l0 = predict_latency(model, meter.profile).latency_ms
    found_any = False
    # The search evaluates plans without building them; it must agree with the built ones.
    planned = plan_evaluator(model, ["latency"], meter)
    assert planned is not None and plan_evaluator(model, ["latency", "macs"], Meter()) is None
    for group in prunable_groups(model)[1:6]:
        target = {"latency": 0.99 * l0}
        found = fewest_channels_removed(model, group, target, ["latency"], meter)
        fast = fewest_channels_removed(model, group, target, ["latency"], meter, planned=planned)
        assert fast == (None if found is None else (found[0], pytest.approx(found[1])))
        if found is None:
            continue
        found_any = True
        kept, values = found
        pred = predict_latency(prune_channels(model, {group.name: kept}), meter.profile)
        assert pred.latency_ms == pytest.approx(values["latency"]) and pred.latency_ms <= target["latency"]  # fmt: skip
    assert found_any


class FakeDevice:
    """A device whose latency follows the converted model's MACs (20 ns each, plus 1 us per
    inference), read from the .tflite file itself: deterministic, and unlike the synthetic
    table. A tiny model's real LiteRT latency here is ~0.04 ms of mostly fixed overhead that
    channel counts barely move, so it cannot test the search's use of measurements;
    benchmarks/netadapt.py measures real networks."""

    where = "a fake device"

    def __init__(
        self, long_runs: int = 0, long_factor: float = 1.0, spikes: dict[str, float] | None = None
    ) -> None:
        """Measurements of at least ``long_runs`` runs (if set) read ``long_factor`` times
        longer, as a real device can over a longer timing; the first timing of an artifact
        named in ``spikes`` reads that many times longer (a one-off outlier)."""
        self.calls: list[str] = []
        self.runs: list[int] = []
        self.long_runs, self.long_factor = long_runs, long_factor
        self.spikes = dict(spikes or {})

    @staticmethod
    def macs(path: Path) -> int:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
        total = 0
        for op in interp._get_ops_details():
            name, ins, outs = op["op_name"], op["inputs"], op["outputs"]
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                total += int(np.prod(shapes[outs[0]][1:3]) * np.prod(shapes[ins[1]]))
            elif name == "FULLY_CONNECTED":
                total += int(np.prod(shapes[ins[1]]))
        return total

    def __call__(
        self, path: Path, sample: Any, runs: int, warmup: int, threads: int | None
    ) -> dict[str, float]:
        self.calls.append(Path(path).name)
        self.runs.append(runs)
        ms = 0.001 + 2e-5 * self.macs(path) / 1e3
        if self.long_runs and runs >= self.long_runs:
            ms *= self.long_factor
        ms *= self.spikes.pop(Path(path).name, 1.0)
        keys = ("p50", "p90", "p95", "p99", "mean", "min", "max")
        return {**dict.fromkeys(keys, ms), "std": 0.0, "runs": runs}


class FakeDeviceExecutor(SerialExecutor):
    """Runs proposals here and measures on the fake device (as Ray does on a device node)."""

    def __init__(self, device: FakeDevice) -> None:
        super().__init__()
        self.device = device

    def measure_fn(self) -> FakeDevice:
        return self.device


def test_latency_search_confirms_by_measurement_and_the_result_trains_and_converts(
    reference: tuple[Any, Path], tiny_profile: Path, digits32: Any, tmp_path: Path
) -> None:
    out = tmp_path / "lat"
    options = NetAdaptOptions(
        budgets=("0.94x",),
        proposals=1,
        short_steps=2,
        long_epochs=0,
        init_fraction=0.03,
        decay=1.0,
        measure_runs=5,
    )
    # The device reads 5% slower in long timings (of 10x measure_runs: the confirmation
    # before the search ends, and the final side-by-side one) than in a chosen network's.
    # ...and its first timing of iteration 2's network reads 1.6x: an outlier.
    device = FakeDevice(long_runs=50, long_factor=1.05, spikes={"net_0002_int8.tflite": 1.6})
    report = netadapt(
        reference[0], digits32, out, options, target="cpu", profile=tiny_profile,
        executor=FakeDeviceExecutor(device),
    )  # fmt: skip
    assert report["status"] == "budget_met", report["message"]
    assert report["latency_source"] == "profile" and report["profile"] == "tiny_int8"
    assert report["options"]["channel_multiple"] == 8  # from the target, recorded for resume
    ref, result = report["reference"], report["result"]
    # The budget is a share of the reference's *measured* latency; the table disagrees with
    # the device, and its predictions are rescaled to agree with each measurement.
    ref_ms = 0.001 + 2e-8 * FakeDevice.macs(out / "artifacts" / "reference_int8.tflite")
    assert ref["latency_ms_measured"] == pytest.approx(ref_ms, rel=1e-4)
    assert report["budget"]["latency"]["value"] == pytest.approx(0.94 * ref_ms, rel=1e-4)
    assert ref["latency_ms_predicted"] == pytest.approx(
        predict_latency(reference[0], tiny_profile).latency_ms
    )
    assert report["iterations"]
    for it in report["iterations"]:
        assert it["resources"]["latency"] <= it["targets"]["latency"] * (1 + 1e-9)
        assert it["resources"]["latency"] == pytest.approx(
            it["latency_ms_predicted"] * it["latency_scale"], rel=1e-4
        )
        assert it["latency_ms_measured"] > 0  # converted to int8 and measured on the device
        assert it["channels_after"] < it["channels_before"]
        assert it["channels_after"] % 8 == 0  # the cpu target's channel block
        assert it["filters_removed"] == it["channels_before"] - it["channels_after"]
        assert 0 <= it["accuracy"] <= 1
    first = report["iterations"][0]
    assert first["latency_scale"] == pytest.approx(ref_ms / ref["latency_ms_predicted"], rel=1e-4)
    # The search stopped on a measured latency under the budget, not on a prediction, and
    # only once a long timing confirmed it: a network under the budget in its own short
    # measurement but over it in the long one did not end the search.
    budget = report["budget"]["latency"]["value"]
    last = report["iterations"][-1]
    assert last["latency_ms_confirmed"] == pytest.approx(1.05 * last["latency_ms_measured"], rel=1e-4)  # fmt: skip
    assert last["latency_ms_confirmed"] <= budget
    over = [it for it in report["iterations"][:-1] if it["latency_ms_measured"] <= budget]
    assert over, "no network was under the budget short and over it long: nothing tested"
    assert all(it["latency_ms_confirmed"] > budget for it in over)
    # Each reversal was timed long once more; both long timings agreed, so they decided.
    assert all(len(it["latency_ms_confirm_timings"]) == 2 for it in over)
    assert last["latency_ms_confirm_timings"] == [last["latency_ms_confirmed"]]
    assert all(
        it["latency_ms_measured"] > budget or it["latency_ms_confirmed"] > budget
        for it in report["iterations"][:-1]
    )
    assert 100 in device.runs and max(device.runs[:2]) == 5  # the long timings: 10x5 runs
    # The outlier was timed twice more, and the median of the three timings counted.
    spiked = report["iterations"][1]
    first_timing, *again = spiked["latency_ms_timings"]
    assert len(again) == 2 and again[0] == again[1] == spiked["latency_ms_measured"]
    assert first_timing == pytest.approx(1.6 * spiked["latency_ms_measured"], rel=1e-4)
    assert all(len(it["latency_ms_timings"]) == 1 for it in report["iterations"] if it is not spiked)  # fmt: skip
    # Each iteration aims under the budget by the table's recent error against measurement
    # (latency_margin, tested on its own below), so as not to land just over it.
    for k, it in enumerate(report["iterations"]):
        margin = latency_margin(report["iterations"][:k])
        assert it["latency_margin"] == pytest.approx(margin, abs=1e-6)
        assert it["targets"]["latency"] >= budget * (1 - margin) * (1 - 1e-9)
    assert any(it["latency_margin"] > 0 for it in report["iterations"])
    # ...and reference and result were measured again for the report.
    side = report["side_by_side"]
    assert set(side["latency_ms"]) == {"reference", "result"} and "fake device" in side["how"]
    assert result["latency_ms"] == pytest.approx(side["latency_ms"]["result"]["p50"])
    assert report["budget"]["latency"]["met"] is True
    assert report["budget"]["latency"]["reached"] == pytest.approx(result["latency_ms"])
    assert "for a budget of 0.94x (" in report["verdict"]
    assert report["verdict"].endswith("): met")
    assert "final side-by-side timing" not in report["message"]
    assert report["width_baseline"] == []
    assert "the reference is not a zoo model" in report["width_baseline_note"]
    # Had the final timing read the result over the budget (the machine slowed down after
    # the search confirmed it), the report would not say plainly that the budget is met.
    state = json.loads((out / STATE).read_text())
    state["result"]["values"]["latency"] = 1.2 * budget
    state["result"]["latency"] = {"p50": 1.2 * budget, "p90": 1.25 * budget}
    slowed = netadapt_report(state, out)
    assert slowed["budget"]["latency"]["met"] is False
    assert "reads the result over the budget" in slowed["message"]
    assert slowed["verdict"].endswith(": NOT met")
    assert result["macs"] < ref["macs"] and result["params"] <= ref["params"]
    # The chosen network is consistent: it predicts the same, trains a step and converts.
    final = load_keras_model(result["model"])
    assert predict_latency(final, tiny_profile).latency_ms == pytest.approx(last["latency_ms_predicted"], rel=1e-4)  # fmt: skip
    assert fine_tune_steps(final, digits32, 1, seed=0)["loss"][0] > 0
    assert (out / "artifacts" / f"net_{last['iteration']:04d}_int8.tflite").is_file()
    assert (out / "netadapt.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "netadapt.json").read_text())["status"] == "budget_met"
    assert not list(out.rglob("*.tmp")) and not (out / "proposals").exists()


def test_a_long_timing_that_reverses_the_short_one_is_decided_by_a_third(
    reference: tuple[Any, Path], tiny_profile: Path, digits32: Any, tmp_path: Path
) -> None:
    """The first confirming timing reads 1.3x (a one-off, as a host's slow state can give);
    the network is under the budget in its short timing and in a second long one, so the
    median of the three keeps it and the search ends there instead of pruning on."""
    options = NetAdaptOptions(
        budgets=("0.94x",), proposals=1, short_steps=2, long_epochs=0, init_fraction=0.03,
        decay=1.0, measure_runs=5,
    )  # fmt: skip
    device = FakeDevice(spikes={"confirm_int8.tflite": 1.3})
    report = netadapt(
        reference[0], digits32, tmp_path / "lat", options, target="cpu", profile=tiny_profile,
        executor=FakeDeviceExecutor(device),
    )  # fmt: skip
    assert report["status"] == "budget_met", report["message"]
    budget = report["budget"]["latency"]["value"]
    *before, last = report["iterations"]
    assert all(it["latency_ms_measured"] > budget for it in before)  # the first under it
    short = last["latency_ms_measured"]
    assert short <= budget < 1.3 * short  # the spike alone would have reversed the verdict
    first, again = last["latency_ms_confirm_timings"]
    assert first == pytest.approx(1.3 * short, rel=1e-4) and again == pytest.approx(short, rel=1e-4)  # fmt: skip
    assert last["latency_ms_confirmed"] == pytest.approx(short, rel=1e-4)


def test_a_table_that_does_not_cover_the_network_gives_way_to_measurement(
    reference: tuple[Any, Path], tiny_profile: Path, digits32: Any, tmp_path: Path
) -> None:
    """The shipped cpu table covers 128x128 inputs: at 32x32 the search measures instead,
    and says so; without a way to measure, the table's gap is the error."""
    from edgekit.search import make_meter

    meter = make_meter(["latency"], "cpu", None, True, tmp_path / "m", digits32.x_train, runs=5)
    assert meter.profile is not None and meter.profile["input_size"] == 128
    meter.check_profile(reference[0])
    assert meter.profile is None and "measured instead" in meter.notes[0]
    assert meter.latency_ms(reference[0]) > 0
    blind = make_meter(["latency"], "cpu", None, False, None, None)
    from edgekit.measure.lut import MissingLayerError

    with pytest.raises(MissingLayerError, match="edgekit lut build"):
        blind.check_profile(reference[0])


def test_a_network_is_timed_side_by_side_with_the_reference(
    reference: tuple[Any, Path], digits32: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the reference is measured, a network's latency is the reference's first p50
    times their ratio in one alternating session: load that comes and goes between two
    measurements cannot make a smaller network read slower."""
    import edgekit.measure
    from edgekit.measure import LatencyStats
    from edgekit.search import Meter

    seen: list[tuple[str, ...]] = []

    def side_by_side(runners: dict[str, Any], sample: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(tuple(runners))
        # The machine got twice as slow since the reference's own measurement.
        return {
            key: LatencyStats(p50, 0, 0, 0, 0, 0, 0, 0, 10, 2, 0, 0)
            for key, p50 in (("anchor", 4.0), ("new", 3.0))
        }

    meter = Meter(can_measure=True, work_dir=tmp_path, calibration=digits32.x_train, runs=5)
    first = meter.measure_ms(reference[0], stem="reference", fresh=True)
    meter.anchor = (meter.artifacts["reference"], 2.0)
    monkeypatch.setattr(edgekit.measure, "measure_side_by_side", side_by_side)
    smaller = prune_channels(reference[0], {"head_conv": 64})
    assert meter.measure_ms(smaller, stem="smaller") == pytest.approx(2.0 * 3.0 / 4.0)
    assert seen == [("anchor", "new")] and first > 0
    # Measured elsewhere (a device, a Ray node), networks are timed one after another.
    remote = Meter(can_measure=True, work_dir=tmp_path, runs=5, device="agent://127.0.0.1:1")
    remote.anchor = meter.anchor
    monkeypatch.setattr(remote, "measure_artifact", lambda path, sample, runs: {"p50": 1.25})
    assert remote.measure_ms(smaller, stem="remote") == 1.25 and len(seen) == 1


def test_a_timing_far_off_the_table_is_repeated_and_the_median_counts(
    reference: tuple[Any, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One timing 60% off the rescaled table's figure is timed twice more; a disagreement
    the timings repeat stands; a timing within the tolerance is taken as it is."""
    from edgekit.search import Meter

    meter = Meter(can_measure=True, work_dir=tmp_path, runs=5, device="agent://127.0.0.1:1")
    readings = iter([1.6, 1.0, 1.02, 1.3, 1.31, 1.29, 1.1, 0.8, 1.0, 0.99])
    monkeypatch.setattr(
        meter, "measure_artifact", lambda path, sample, runs: {"p50": next(readings)}
    )
    spiked = prune_channels(reference[0], {"head_conv": 64})
    assert meter.measure_checked(spiked, "a", expected=1.0) == (1.02, [1.6, 1.0, 1.02])
    assert meter.measure_ms(spiked) == 1.02  # the median is what the meter remembers
    slower = prune_channels(reference[0], {"head_conv": 56})
    assert meter.measure_checked(slower, "b", expected=1.0) == (1.3, [1.3, 1.31, 1.29])
    close = prune_channels(reference[0], {"head_conv": 48})
    assert meter.measure_checked(close, "c", expected=1.0) == (1.1, [1.1])
    assert meter.measure_checked(close, "c", expected=2.0) == (1.1, [1.1])  # measured before
    faster = prune_channels(reference[0], {"head_conv": 40})  # 20% under the table: again
    assert meter.measure_checked(faster, "d", expected=1.0) == (0.99, [0.8, 1.0, 0.99])


def test_the_first_of_the_targets_tables_that_covers_the_network_is_used(
    reference: tuple[Any, Path], tiny_profile: Path
) -> None:
    """A target names one table per input size (more_profiles): the search takes the one
    that covers its network, says so, and predicts from it."""
    from edgekit.measure.lut import load_profile
    from edgekit.search import Meter, make_meter
    from edgekit.targets import load_target

    cpu = load_target("cpu")
    meter = make_meter(["latency"], "cpu", None, False, None, None)
    tables = [meter.profile, *meter.alternatives]
    # One table per input size and kind of CPU (its kernel-selecting features).
    kinds = [(t["input_size"], tuple(t["device"]["flags"])) for t in tables]
    assert len(meter.alternatives) == len(cpu.more_profiles) >= 1 and len(set(kinds)) == len(kinds)
    tiny = load_profile(tiny_profile)
    both = Meter(profile=meter.profile, alternatives=[*meter.alternatives, tiny])
    both.check_profile(reference[0])
    assert both.profile is tiny and "'tiny_int8' covers this network" in both.notes[0]
    assert both.latency_ms(reference[0]) == pytest.approx(both.predict_ms(reference[0]))
    # An explicit --profile is the user's choice: no alternatives are tried.
    assert make_meter(["latency"], "cpu", tiny_profile, False, None, None).alternatives == []


def test_a_table_recorded_on_this_cpus_features_is_preferred_and_another_is_named(
    reference: tuple[Any, Path], tiny_profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts both called "AMD EPYC", one with AVX-512 VNNI and one with AVX2 only, ran
    the same network 3.5x apart: among the tables that cover a network measured here, the
    one recorded with this CPU's kernel-selecting features is taken; failing that, the
    first, and a note says which features differ."""
    import copy

    import edgekit.measure._lut_build as lut_build
    from edgekit.search import Meter

    avx2 = ["sse4_2", "avx", "avx2", "fma", "f16c"]
    monkeypatch.setattr(lut_build, "_cpuinfo", lambda: {"cpu": "AMD EPYC", "flags": avx2})
    tiny = load_profile(tiny_profile)
    vnni, here = copy.deepcopy(tiny), copy.deepcopy(tiny)
    vnni["name"], vnni["device"]["flags"] = "vnni", [*avx2, "avx512f", "avx512_vnni"]
    here["name"], here["device"]["flags"] = "avx2", avx2
    both = Meter(profile=vnni, alternatives=[here], can_measure=True)
    both.check_profile(reference[0])
    assert both.profile is here and both.notes == [
        "the target's table 'avx2' covers this network and was recorded with this CPU's "
        "features; the first, 'vnni', was recorded on other ones"
    ]
    alone = Meter(profile=vnni, can_measure=True)
    alone.check_profile(reference[0])
    assert alone.profile is vnni and len(alone.notes) == 1
    assert (
        "'vnni' was recorded on a CPU with avx512f, avx512_vnni, which this one lacks"
        in (alone.notes[0])
    )
    assert "`edgekit lut build`" in alone.notes[0]
    older = copy.deepcopy(here)
    older["device"]["flags"] = ["sse4_2", "avx"]
    newer = Meter(profile=older, can_measure=True)
    newer.check_profile(reference[0])
    assert "without avx2, fma, f16c, which this one has" in newer.notes[0]
    # AVX-512 without VNNI (Skylake-SP): no table has exactly its features; the AVX2 one is
    # of its kind (no int8 dot product), not the VNNI one.
    skylake = [*avx2, "avx512f", "avx512bw", "avx512vl"]
    monkeypatch.setattr(lut_build, "_cpuinfo", lambda: {"cpu": "Xeon", "flags": skylake})
    kin = Meter(profile=vnni, alternatives=[here], can_measure=True)
    kin.check_profile(reference[0])
    assert kin.profile is here and "without an int8 dot product, like this one" in kin.notes[0]
    assert "without avx512f, avx512bw, avx512vl, which this one has" in kin.notes[1]
    # A system that does not say (no /proc/cpuinfo): nothing is compared, nothing claimed.
    monkeypatch.setattr(lut_build, "_cpuinfo", lambda: {"cpu": "?", "flags": []})
    unknown = Meter(profile=vnni, alternatives=[here], can_measure=True)
    unknown.check_profile(reference[0])
    assert unknown.profile is vnni and unknown.notes == []
    monkeypatch.setattr(lut_build, "_cpuinfo", lambda: {"cpu": "AMD EPYC", "flags": avx2})
    # Predicted without measuring (--no-measure) on a cpu target: still this machine's CPU.
    blind = Meter(profile=vnni, alternatives=[here], target="cpu")
    blind.check_profile(reference[0])
    assert blind.profile is here
    # Measured elsewhere (a device), this CPU's features say nothing: the first table stays.
    remote = Meter(profile=vnni, alternatives=[here], can_measure=True, device="ssh://pi")
    remote.check_profile(reference[0])
    assert remote.profile is vnni and remote.notes == []


def test_a_search_measures_every_latency_on_the_device_it_is_given(
    reference: tuple[Any, Path],
    tiny_profile: Path,
    digits32: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--device agent://: the reference, each chosen network, the result and the side-by-side
    confirmation are all timed by a real edgekit agent on loopback; nothing is timed here."""
    import threading

    import edgekit.measure
    from edgekit.measure.remote import make_agent_server

    token = "netadapt-test-token-0123456789"
    monkeypatch.setenv("EDGEKIT_AGENT_TOKEN", token)

    def no_local_runtime(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a latency was measured on this machine, not on the device")

    monkeypatch.setattr(edgekit.measure, "open_runner", no_local_runtime)
    server = make_agent_server(port=0, token=token, scratch_dir=tmp_path / "agent")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"agent://127.0.0.1:{server.server_address[1]}"
    try:
        options = NetAdaptOptions(
            budgets=("0.94x",), proposals=1, short_steps=2, long_epochs=0,
            init_fraction=0.03, decay=1.0, max_iterations=1, measure_runs=5, baseline=False,
        )  # fmt: skip
        report = netadapt(
            reference[0], digits32, tmp_path / "run", options, target="cpu",
            profile=tiny_profile, device=uri,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert report["device"] == uri and report["status"] in ("budget_met", "max_iterations")
    assert report["iterations"]
    assert all(it["latency_ms_measured"] > 0 for it in report["iterations"])
    assert report["reference"]["latency_ms_measured"] > 0
    how = report["side_by_side"]["how"]
    assert how.startswith("one after another on") and uri in how
    assert set(report["side_by_side"]["latency_ms"]) == {"reference", "result"}


# --------------------------------------------------------------------------- runs


def test_resume_after_a_kill_ends_like_the_uninterrupted_run(
    reference: tuple[Any, Path], digits32: Any, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    assert uninterrupted["status"] == "budget_met"
    assert len(uninterrupted["iterations"]) >= 2
    # Every chosen network met both of its iteration's targets, and the result both budgets.
    for it in uninterrupted["iterations"]:
        assert all(it["resources"][r] <= it["targets"][r] for r in ("macs", "size"))
    assert all(b["met"] for b in uninterrupted["budget"].values())

    class Killed(Exception):
        pass

    class KilledInIteration2(SerialExecutor):
        """Dies once the second iteration's proposals are fine-tuned and saved, before one
        is chosen and checkpointed: the run's folder holds half an iteration."""

        def map(self, tasks: Any) -> Any:
            results = super().map(tasks)
            if any("iter_0002" in t.out_path for t in tasks):
                raise Killed
            return results

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        netadapt(
            reference[0],
            digits32,
            out,
            NetAdaptOptions(**MACS_RUN),
            data_source="digits",  # resume loads it again
            executor=KilledInIteration2(),
        )
    state = json.loads((out / STATE).read_text())
    assert state["iteration"] == 1 and state["phase"] == "search"
    assert list((out / "proposals" / "iter_0002").glob("*.keras"))  # the half iteration
    assert not (out / "result.keras").exists()

    report = resume(out)
    assert report["status"] == uninterrupted["status"]
    assert [_comparable(r) for r in report["iterations"]] == [
        _comparable(r) for r in uninterrupted["iterations"]
    ]
    assert _channels(report["result"]["model"]) == _channels(uninterrupted["result"]["model"])
    assert report["result"]["accuracy"] == uninterrupted["result"]["accuracy"]
    with pytest.raises(BadInputError, match="already holds a NetAdapt run"):
        netadapt(reference[0], digits32, out, NetAdaptOptions(**MACS_RUN))


SCREENED_RUN = {
    **MACS_RUN,
    "screen_batches": 3,
    "max_iterations": 1,
    "init_fraction": 0.03,
}


@pytest.fixture(scope="module")
def screened(
    reference: tuple[Any, Path], digits32: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("na") / "screened"
    return netadapt(reference[0], digits32, out, NetAdaptOptions(**SCREENED_RUN))


def test_screening_scores_every_group_and_fine_tunes_the_best(
    reference: tuple[Any, Path],
    digits32: Any,
    screened: dict[str, Any],
    uninterrupted: dict[str, Any],
    tmp_path: Path,
) -> None:
    """With --screen-batches every group that can make the step is scored unfine-tuned
    (BatchNorm re-estimated); the best K by accuracy, then loss, are the ones fine-tuned."""
    from edgekit.search import derive_seed
    from edgekit.search._executor import ProposalTask, run_proposal

    it = screened["iterations"][0]
    rows = it["screened"]
    groups = prunable_groups(reference[0])
    assert len(rows) + len(it["unreachable"]) == len(groups) and len(rows) >= 4
    kept = {r["group"] for r in rows if r["kept"]}
    assert len(kept) == 2 and {p["group"] for p in it["proposals"]} == kept
    # Of the two, the one kept is the best after fine-tuning, not after screening.
    tuned = min(it["proposals"], key=lambda p: (-p["accuracy"], p["val_loss"]))
    assert it["group"] == tuned["group"]
    ranked = sorted(rows, key=lambda r: (-r["accuracy"], r["val_loss"]))
    assert {r["group"] for r in ranked[:2]} == kept
    assert len({(r["accuracy"], r["val_loss"]) for r in rows}) > 1  # the scores differ
    # Where the iteration's time went: every screened proposal's own seconds, and the
    # phases, which account for the iteration's wall time (state and clean-up aside).
    assert all(r["seconds"] > 0 for r in rows)
    phases = it["phase_seconds"]
    assert set(phases) == {"plan", "screen", "fine_tune", "measure"}
    assert phases["screen"] > 0 and phases["fine_tune"] > 0
    assert 0.9 * it["seconds"] <= sum(phases.values()) <= it["seconds"] + 0.05  # rounding
    # A screened score is that proposal pruned and re-estimated, unfine-tuned, as a task.
    row = rows[-1]
    task = ProposalTask(
        index=0, model_path=str(reference[1]), plan={row["group"]: row["channels_after"]},
        out_path=str(tmp_path / "p.keras"), seed=derive_seed(0, "screen", 1),
        steps=0, bn_batches=3, save=False,
    )  # fmt: skip
    result = run_proposal(task, digits32)
    assert (round(result.accuracy, 6), result.loss) == (row["accuracy"], row["val_loss"])
    assert result.out_path == "" and not (tmp_path / "p.keras").exists()
    # Without screening (MACS_RUN: a larger first step, more iterations), the K = 2 groups
    # offered are those with the largest share of MACs, passing over any that cannot make
    # the step.
    from edgekit.models import count_layers

    plain = uninterrupted["iterations"][0]
    assert "screened" not in plain and len(plain["proposals"]) == 2
    assert plain["phase_seconds"]["screen"] < 0.01 < plain["phase_seconds"]["fine_tune"]
    macs = {c.name: c.macs for c in count_layers(reference[0])}
    share = {g.name: sum(macs.get(n, 0) for n in {*g.producers, *g.consumers}) for g in groups}
    offered = [p["group"] for p in plain["proposals"]]
    passed = set(offered) | set(plain["unreachable"])
    assert min(share[g] for g in offered) >= max(v for g, v in share.items() if g not in passed)


@pytest.fixture(scope="module")
def micro(digits32: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """Three convolutions trained 2 epochs, and its screened search run serially: what the
    executors must reproduce. Its tasks cost a fifth of mobilenet_v2_tiny's (the suite's
    time); the executors do not look inside the network."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = inputs = layers.Input((32, 32, 3))
    for i, (filters, stride) in enumerate([(16, 2), (24, 2), (32, 1)]):
        x = layers.Conv2D(
            filters, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i}"
        )(x)
        x = layers.ReLU(name=f"relu{i}")(layers.BatchNormalization(name=f"bn{i}")(x))
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    train_model(model, digits32, TrainConfig(epochs=2, seed=0))
    out = tmp_path_factory.mktemp("na") / "micro"
    return model, netadapt(model, digits32, out, NetAdaptOptions(**SCREENED_RUN))


def test_process_pool_gives_the_serial_result(
    micro: tuple[Any, dict[str, Any]], digits32: Any, tmp_path: Path
) -> None:
    """Screening tasks and then two fine-tuning tasks run in parallel, as the serial run."""
    model, serial = micro
    assert len(serial["iterations"][0]["screened"]) == 3  # every convolution
    with LocalPoolExecutor(2) as pool:
        options = NetAdaptOptions(**SCREENED_RUN)
        report = netadapt(model, digits32, tmp_path / "pool", options, executor=pool)
    assert report["status"] in ("max_iterations", "budget_met")
    assert report["executor"] == "process_pool(2)"
    assert _comparable(report["iterations"][0]) == _comparable(serial["iterations"][0])


_POOL_THEN_WAIT = """
import time
from edgekit.data import load_dataset
from edgekit.search import LocalPoolExecutor

executor = LocalPoolExecutor(2)
executor.start(load_dataset("digits", (8, 8, 3)))
pool = executor.pool()
list(pool.map(time.sleep, [1.0, 1.0]))  # both workers started
print(*pool._processes, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_end_when_the_search_is_killed(tmp_path: Path) -> None:
    """A search killed with SIGKILL (or SIGTERM) cannot shut its pool down: the workers
    notice that their parent is gone and exit, instead of living on with their memory."""
    import signal
    import subprocess
    import time

    def alive(pid: int) -> bool:
        try:  # a zombie waiting for its new parent to reap it has ended too
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    proc = subprocess.Popen(
        [sys.executable, "-c", _POOL_THEN_WAIT], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


def test_ray_gives_the_serial_result_and_measures_on_the_device_node(
    micro: tuple[Any, dict[str, Any]], digits32: Any, tmp_path: Path
) -> None:
    """A local Ray instance with 2 CPUs and one unit of a device resource: proposals travel
    as bytes (no shared folder is assumed; a screened one, never saved, sends none back) and
    come back identical to the serial run's; measurements run as tasks that need the device
    resource, in a Ray worker."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'edgekit[ray]'")
    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.search import RayExecutor

    model, serial = micro
    options = NetAdaptOptions(**SCREENED_RUN)
    artifact = get_converter("tflite_int8").convert(
        model, tmp_path, ConvertOptions(stem="ref", calibration=digits32.x_train)
    )
    with RayExecutor("local", num_cpus=2, device_resource="edgekit_test_device") as ray_ex:
        measure = ray_ex.measure_fn()
        stats = measure(artifact.path, digits32.x_test[:1], 20, 2, 1)
        report = netadapt(model, digits32, tmp_path / "ray", options, executor=ray_ex)
    with pytest.raises(RuntimeError, match="after close"):  # the run closed Ray
        measure(artifact.path, digits32.x_test[:1], 20, 2, 1)
    assert report["executor"] == "ray"
    assert _comparable(report["iterations"][0]) == _comparable(serial["iterations"][0])
    # The proposal written back from the worker is the network the record describes.
    it = report["iterations"][0]
    assert _channels(tmp_path / "ray" / "result.keras")[it["group"]] == it["channels_after"]
    assert 0 < stats["p50"] <= stats["p90"] and stats["runs"] == 20
    assert stats["pid"] != os.getpid()  # measured in a worker on the resource's node
    assert "edgekit_test_device" in measure.where


def test_unreachable_budget_stops_keeps_the_last_network_and_runs_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the CLI, from a zoo model trained first, with the width baseline (on by
    default for a zoo model)."""
    out = tmp_path / "unreachable"
    code, stdout, err = _run(
        [
            "search", "netadapt", "--model", "mobilenet_v2_tiny", "--train-epochs", "1",
            "--target", "cpu", "--resource", "macs", "--budget", "1000", "--proposals", "1",
            "--short-steps", "1", "--long-epochs", "0", "--init-fraction", "0.9", "--decay", "1",
            "--baseline-widths", "0.5", "--no-measure", "--out", str(out), "--json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    assert report["status"] == "budget_unreachable"
    assert "no channel group can be pruned to reach" in report["message"]
    assert "budget_unreachable" in err
    assert report["budget"]["macs"]["met"] is False
    iterations = report["iterations"]
    assert iterations, "the first step should have been reachable"
    # The last network found is kept as the result.
    kept = _channels(out / iterations[-1]["model"])
    assert _channels(report["result"]["model"]) == kept
    assert report["result"]["macs"] == iterations[-1]["resources"]["macs"]
    assert report["zoo"] == {
        "name": "mobilenet_v2_tiny", "width": 1.0, "input_size": 32, "train_epochs": 1
    }  # fmt: skip
    # The baseline: the same zoo model at half width, trained as many epochs as the result saw.
    (base,) = report["width_baseline"]
    assert report["width_baseline_note"] is None
    assert base["width"] == 0.5 and base["epochs"] == 2
    assert base["macs"] < report["reference"]["macs"] and 0 <= base["accuracy"] <= 1
    assert Path(base["model"]).is_file()
    assert (out / "netadapt.png").is_file()
    # Without --json the same report is printed as tables and one line per budget.
    _print_report(report)
    text = capsys.readouterr().out
    assert "edgekit search netadapt: budget_unreachable" in text and "width 0.5" in text
    assert "for a budget of 1000" in text and ": NOT met" in text


def test_distill_teaches_the_result_and_every_baseline_width_from_the_reference(
    reference: tuple[Any, Path], digits32: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With distillation the long fine-tuning and the width baseline learn from the
    reference, not from the labels. Trained on labels shifted by one class and with the
    labels' weight at 0, they go on predicting the true classes. The controls train the
    same networks plainly on the same labels, with the same seeds and epochs: they learn
    the shift (one search here, not two: the suite's time)."""
    from edgekit.search._options import train_zoo_model

    def accuracy(model: Any) -> float:
        probs = model.predict(digits32.x_test, verbose=0)
        return float(np.mean(probs.argmax(1) == digits32.y_test))

    shifted = dataclasses.replace(digits32, y_train=(digits32.y_train + 1) % 10)
    zoo = ZooSpec("mobilenet_v2_tiny", 1.0, 32, 1)
    # One iteration of search (the suite's time): the long fine-tuning and the baseline
    # are what is tested.
    run = {**MACS_RUN, "long_epochs": 1, "baseline": True, "baseline_widths": (0.5,)}
    run["max_iterations"] = 1
    out = tmp_path / "taught"
    taught = netadapt(
        reference[0], shifted, out, NetAdaptOptions(**run, distill=True, distill_lam=0.0), zoo=zoo
    )
    ref_acc = taught["reference"]["accuracy"]
    assert ref_acc > 0.5
    assert taught["options"]["distill"] is True
    assert taught["result"]["training"]["distilled"] is True
    assert taught["result"]["accuracy"] > ref_acc - 0.15
    (taught_base,) = taught["width_baseline"]
    assert taught_base["distilled"] is True and taught_base["accuracy"] > 0.4
    # Control 1: the searched network (before its long fine-tuning), fine-tuned plainly.
    state = json.loads((out / STATE).read_text())
    searched = load_keras_model(out / state["current"]["model"])
    long = taught["result"]["training"]
    lr = NetAdaptOptions.long_learning_rate
    cfg = TrainConfig(epochs=long["epochs"], learning_rate=lr, seed=long["seed"])
    train_model(searched, shifted, cfg)
    assert accuracy(searched) < 0.25
    # Control 2: the baseline width trained plainly, with its seed and epochs.
    spec = ZooSpec("mobilenet_v2_tiny", taught_base["width"], 32, taught_base["epochs"])
    assert accuracy(train_zoo_model(spec, shifted, taught_base["seed"])) < 0.25
    _print_report(taught)
    assert "and every width of the baseline learnt from the reference" in capsys.readouterr().out


def test_final_scratch_trains_the_searched_architecture_from_fresh_weights(
    reference: tuple[Any, Path],
    digits32: Any,
    uninterrupted: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--final scratch runs the same search, keeps only the architecture of its network and
    trains that from fresh weights (drawn from the run's seed) for as many epochs as the
    width baseline. The run is killed at the first epoch of that training and resumed: the
    resumed result is exactly the architecture trained from noise with the recorded seed and
    epochs, which is what the uninterrupted run trains (one search here, not two: the suite's
    time)."""

    class Killed(Exception):
        pass

    class KillAtFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            raise Killed

    zoo = ZooSpec("mobilenet_v2_tiny", 1.0, 32, 1)
    # One iteration of the uninterrupted run's search (the suite's time): the final
    # training is what is tested, after a search stopped by --max-iterations.
    # No width baseline (the suite's time): baseline_epochs() sets both (tested above).
    options = NetAdaptOptions(**{**MACS_RUN, "long_epochs": 1}, final="scratch", max_iterations=1)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        netadapt(
            reference[0], digits32, out, options, zoo=zoo, data_source="digits",
            training_callbacks=lambda _: [KillAtFirstEpoch()],
        )  # fmt: skip
    state = json.loads((out / STATE).read_text())
    assert state["phase"] == "finetune" and not (out / "result.keras").exists()
    report = resume(out)
    assert report["status"] == "max_iterations"
    (first,) = [_comparable(it) for it in report["iterations"]]
    assert first == _comparable(uninterrupted["iterations"][0])  # the same search
    # The architecture is the searched network's (the checkpoint its one iteration chose).
    searched = load_keras_model(out / json.loads((out / STATE).read_text())["current"]["model"])
    result = load_keras_model(report["result"]["model"])
    assert _channels(result) == _channels(searched) != _channels(reference[0])
    assert [layer.name for layer in result.layers] == [layer.name for layer in searched.layers]
    training = report["result"]["training"]
    # The reference's 1 epoch, the short fine-tunings' batches (rounded up to an epoch)
    # and the 1 long epoch a fine-tuned result would have had.
    short = math.ceil(len(report["iterations"]) * 2 / math.ceil(len(digits32.x_train) / 32))
    epochs = 1 + short + 1
    assert training["how"] == "scratch" and training["distilled"] is False
    assert training["epochs"] == epochs == 3
    assert training["seconds"] > 0
    assert {k: v for k, v in uninterrupted["result"]["training"].items() if k != "seconds"} == {
        "how": "fine-tune", "epochs": 0, "seed": None, "distilled": False,
    }  # fmt: skip
    # Nothing of the searched weights is kept: the same architecture with its weights
    # replaced by noise, trained with the recorded seed and epochs, gives the same result.
    scrambled = keras.models.clone_model(searched)
    rng = np.random.default_rng(1)
    scrambled.set_weights([rng.normal(size=w.shape) for w in searched.get_weights()])
    again = train_from_scratch(scrambled, digits32, training["epochs"], training["seed"])
    sample = digits32.x_test[:64]
    expected = result.predict(sample, verbose=0)
    np.testing.assert_allclose(again.predict(sample, verbose=0), expected, atol=1e-5)
    assert report["result"]["accuracy"] > 0.2  # trained, not left at chance (0.1)
    _print_report(report)
    printed = capsys.readouterr().out
    assert f"trained from fresh weights for {epochs} epochs (--final scratch)" in printed


def _options_handed_over(
    args: list[str],
    reference: tuple[Any, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """The NetAdaptOptions `edgekit search netadapt ... ARGS` hands to the search (which is
    replaced by a recorder), as a dict."""
    import edgekit.search

    def record(net: Any, dataset: Any, out: Path, options: NetAdaptOptions, **_: Any) -> dict:
        return {"options": options.as_dict()}

    monkeypatch.setattr(edgekit.search, "netadapt", record)
    base = [
        "search", "netadapt", str(reference[1]), "--target", "cpu", "--resource", "macs",
        "--budget", "0.5x", "--out", str(tmp_path / "out"), "--json",
    ]  # fmt: skip
    code, stdout, err = _run([*base, *args], capsys)
    assert code == 0, err
    return json.loads(stdout)["options"]


def test_the_cli_hands_the_distillation_settings_to_the_search(
    reference: tuple[Any, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = _options_handed_over(
        ["--distill", "--distill-temperature", "2.5", "--distill-lam", "0.25"],
        reference, tmp_path, capsys, monkeypatch,
    )  # fmt: skip
    assert (given["distill"], given["distill_temperature"], given["distill_lam"]) == (
        True, 2.5, 0.25,
    )  # fmt: skip
    options = _options_handed_over([], reference, tmp_path, capsys, monkeypatch)
    assert (options["distill"], options["distill_temperature"], options["distill_lam"]) == (
        False, NetAdaptOptions.distill_temperature, NetAdaptOptions.distill_lam,
    )  # fmt: skip


def test_the_final_epochs_set_the_result_and_the_baseline(digits32: Any, tmp_path: Path) -> None:
    """--final-epochs sets how long both train; without it, the epochs a fine-tuned result
    would have seen."""
    from edgekit.search._loop import Search

    def epochs(**options: Any) -> int:
        state = {
            "options": NetAdaptOptions(**{**MACS_RUN, **options}).as_dict(),
            "budgets": [],
            "zoo": {"name": "mobilenet_v2_tiny", "width": 1.0, "input_size": 32, "train_epochs": 7},
            "history": [{}] * 40,  # 40 iterations x 2 batches: 3 epochs of 37 batches
        }
        return Search(tmp_path, state, digits32, None, None, print, None, None).baseline_epochs()

    assert epochs(long_epochs=5) == 7 + 3 + 5 == epochs(long_epochs=5, final="scratch")
    assert epochs(long_epochs=5, final="scratch", final_epochs=11) == 11


def test_a_scratch_trained_result_learns_from_the_teacher_under_distill(
    reference: tuple[Any, Path], digits32: Any
) -> None:
    """With a teacher and the labels' weight at 0, the fresh network learns the teacher's
    classes, not the (shifted) labels."""
    shifted = dataclasses.replace(digits32, y_train=(digits32.y_train + 1) % 10)
    model = train_from_scratch(reference[0], shifted, 3, seed=5, teacher=reference[0], lam=0.0)
    probs = model.predict(digits32.x_test, verbose=0)
    assert float(np.mean(probs.argmax(1) == digits32.y_test)) > 0.3  # shifted labels: ~0


def test_the_cli_hands_the_final_training_to_the_search(
    reference: tuple[Any, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import click

    from edgekit.search._options import FINALS

    given = _options_handed_over(
        ["--final", "scratch", "--final-epochs", "7"], reference, tmp_path, capsys, monkeypatch
    )
    assert (given["final"], given["final_epochs"]) == ("scratch", 7)
    options = _options_handed_over([], reference, tmp_path, capsys, monkeypatch)
    assert (options["final"], options["final_epochs"]) == (NetAdaptOptions.final, None)
    # The CLI lists the choices itself (it does not import the search to start).
    (param,) = [p for p in cli.commands["search"].commands["netadapt"].params if p.name == "final"]
    assert isinstance(param.type, click.Choice) and tuple(param.type.choices) == FINALS


def test_resume_refuses_every_option_that_defines_a_run() -> None:
    """Every option of the command is either a run's setting (refused with --resume, which
    reads them from the checkpoint) or how this process runs it."""
    from edgekit.cli._search_cmd import _RUN_OPTIONS

    how = {"workers", "ray_address", "ray_device_resource", "resume_dir", "as_json"}
    params = {p.name for p in cli.commands["search"].commands["netadapt"].params}
    assert params - how == set(_RUN_OPTIONS)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (["--budget", "fast"], "cannot read latency budget 'fast'", 2),
        (["--resource", "macs", "--budget", "5G"], "is above the reference's", 2),
        # Above the reference's measured latency: known only after timing it, which writes
        # its artifact under --out; that must not be left behind either.
        (["--budget", "1000ms"], "is above the reference's", 2),
        (["--resource", "macs", "--budget", "1.5x"], "not a share in (0, 1]", 2),
        (["--resource", "macs,size", "--budget", "0.5x"], "give one --budget per --resource", 2),
        (["--target", "coral"], "needs a latency look-up table", 2),
        (["--no-measure"], "measuring is turned off", 2),  # the cpu table is for 128x128
        (["--workers", "0"], "--workers must be >= 1", 2),
        (["--channel-multiple", "0"], "--channel-multiple must be an integer >= 1", 2),
        (["--bn-batches", "-1"], "--bn-batches must be an integer >= 0; got -1", 2),
        (["--screen-batches", "4"], "but without --proposals K every group is", 2),
        (
            ["--proposals", "2", "--screen-batches", "-1"],
            "--screen-batches must be an integer >= 0; got -1",
            2,
        ),
        (["--learning-rate", "0"], "--learning-rate must be a number > 0; got 0.0", 2),
        (["--long-learning-rate", "-1"], "--long-learning-rate must be a number > 0", 2),
        (["--distill", "--long-epochs", "0"], "--distill teaches the long fine-tuning", 2),
        (
            ["--distill", "--distill-temperature", "0"],
            "--distill-temperature must be a number > 0",
            2,
        ),
        (["--distill", "--distill-lam", "-1"], "--distill-lam must be a number >= 0; got -1.0", 2),
        (["--distill-lam", "0.2"], "--distill-lam 0.2 without it: add --distill", 2),
        (["--final-epochs", "3"], "got --final-epochs 3 with --final fine-tune", 2),
        (
            ["--final", "scratch", "--final-epochs", "4", "--long-learning-rate", "0.01"],
            "got --long-learning-rate 0.01 with --final scratch: drop one of them",
            2,
        ),
        (["--final", "scratch", "--final-epochs", "0"], "--final-epochs must be an integer", 2),
        (["--final", "scratch"], "does not say how long it trained: give --final-epochs N", 2),
        (["--ray-address", "auto", "--workers", "2"], "exclude each other", 2),
        (["--target", "jetson", "--device", "agent://127.0.0.1:1"], "but target 'jetson' runs", 2),
        (["--baseline"], "--baseline rebuilds the zoo architecture", 2),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    reference: tuple[Any, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
    code: int,
) -> None:
    out = tmp_path / "never"
    base = ["search", "netadapt", str(reference[1]), "--out", str(out), "--short-steps", "1"]
    if "--target" not in args:
        base += ["--target", "cpu"]
    if "--budget" not in args:
        base += ["--budget", "0.5x"]
    got, stdout, err = _run(base + args, capsys)
    assert got == code, err
    lines = [line for line in err.splitlines() if line.startswith("edgekit: error: ")]
    assert len(lines) == 1 and says in lines[0], err
    assert stdout == ""
    assert not out.exists()


def test_a_zoo_model_is_refused_before_training_for_a_budget_above_its_measured_latency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    code, stdout, err = _run(
        [
            "search", "netadapt", "--model", "mobilenet_v2_tiny", "--train-epochs", "50",
            "--target", "cpu", "--budget", "1000ms", "--out", str(out),
        ],
        capsys,
    )  # fmt: skip
    assert code == 2, err
    assert "is above the reference's" in err and "training" not in err
    assert stdout == "" and not out.exists()


def test_resume_needs_a_checkpoint_and_no_new_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["search", "netadapt", "--resume", str(tmp_path)], capsys)
    assert code == 2 and "holds no NetAdapt checkpoint" in err
    code, _, err = _run(
        ["search", "netadapt", "--resume", str(tmp_path), "--budget", "0.5x"], capsys
    )
    assert code == 2 and "drop --budget" in err
    code, _, err = _run(
        ["search", "netadapt", "model.keras", "--resume", str(tmp_path), "--runs", "5"], capsys
    )
    assert code == 2 and "drop --runs, MODEL" in err
