"""NetAdapt: shrink a trained network, one channel group at a time, until it meets a budget.

The algorithm of Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for
Mobile Applications" (ECCV 2018): maximize accuracy subject to ``Res_j(Net) <= Bud_j`` for
every constrained resource ``j`` (latency, MACs, size; see :mod:`edgekit.search._resources`).

Starting from the trained ``Net_0``, iteration ``i`` (from 1):

1. sets each resource's target ``max(Bud_j, Res_j(Net_{i-1}) - ΔR_{j,i})`` with
   ``ΔR_{j,i} = Res_j(Net_0) · init_fraction · decay^(i-1)``; the first resource given
   is the primary one (the progress messages and the chart follow it), the others follow
   the same schedule while they are over their budget, and are free once they are under;
2. for each of K channel groups (all prunable groups by default; with ``proposals=K``,
   the groups whose layers carry the largest share of the primary resource, taken in that
   order until K of them reach the target; with ``screen_batches`` as well, the K best of
   every group that reaches it, scored on the validation split after pruning and
   re-estimating BatchNorm statistics, without fine-tuning), proposes the network that
   removes as few channels from that group as the targets need: the largest kept count, in
   multiples of the group's divisor, whose evaluated resources meet every target (found by a
   bracketed search, :func:`edgekit.search._schedule.largest_feasible`); which channels go
   is decided by filter L1 norm. Groups that cannot reach the targets are skipped;
3. fine-tunes each proposal for ``short_steps`` batches with a seed fixed by the run's seed,
   the iteration and the group, and evaluates it on the validation split;
4. keeps the most accurate (ties: the lower validation loss, then the smaller primary
   resource, then model order); when the primary resource is latency and the target can be
   measured here, converts it and measures it, recording the predicted and the measured
   latency.

A relative budget (``0.5x``) is a share of the reference's resource as the search evaluates
it: for latency, the table's prediction when there is a table (each chosen network's
measured latency is recorded beside it), the measurement otherwise. Only predicted
resources (a table, MACs, size) make a run exactly reproducible; measured latency is noisy.

It stops when every budget is met (status ``budget_met``), when no group can reach an
iteration's targets (``budget_unreachable``: the last network is kept), or after
``max_iterations`` (``max_iterations``); the network is then fine-tuned ``long_epochs``
epochs (or, with ``final="scratch"``, only its architecture is kept: it is trained from
fresh weights as long as the width baseline). Every iteration is checkpointed in the
output folder (the network as ``.keras`` and a JSON state, each written atomically);
:func:`resume` continues a killed run and ends with
what the uninterrupted run would have given, because every random choice is seeded from
the run's seed and the checkpointed network is what the next iteration reads in either case.

Optionally, the paper's baseline: the same zoo architecture at uniform width multipliers,
trained for as many epochs as the NetAdapt network saw, measured the same way.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit.data import Dataset
from edgekit.errors import BadInputError
from edgekit.search._executor import Executor
from edgekit.search._loop import (
    Search,
    describe,
    fewest_channels_removed,
    resource_values,
    sayer,
    write_state,
)
from edgekit.search._options import (
    CHART,
    REPORT,
    STATE,
    STATE_SCHEMA,
    STATUSES,
    IterationHook,
    NetAdaptOptions,
    Progress,
    ZooSpec,
    train_zoo_model,
)
from edgekit.search._report import netadapt_report
from edgekit.search._resources import Budget, Meter, get_resource, make_meter

__all__ = [
    "CHART",
    "REPORT",
    "STATE",
    "STATUSES",
    "NetAdaptOptions",
    "ZooSpec",
    "check_budgets",
    "check_out_dir",
    "fewest_channels_removed",
    "netadapt",
    "netadapt_report",
    "resume",
    "train_zoo_model",
]


def netadapt(
    model: Any,
    data: Dataset,
    out_dir: str | Path,
    options: NetAdaptOptions | None = None,
    *,
    target: str | None = None,
    profile: str | Path | dict[str, Any] | None = None,
    device: str | None = None,
    data_source: str | None = None,
    zoo: ZooSpec | None = None,
    trust_model: bool = False,
    executor: Executor | None = None,
    progress: Progress | None = None,
    training_callbacks: Callable[[int], list[Any]] | None = None,
    on_iteration: IterationHook | None = None,
) -> dict[str, Any]:
    """Shrink ``model`` with NetAdapt until it meets ``options.budgets``.

    Args:
        model: a trained functional ``tf_keras`` classifier (it is not modified).
        data: the split data set: train for fine-tuning, val for choosing, test for reports.
        out_dir: a new (or empty) folder for checkpoints, models and the report.
        options: what to search; defaults to :class:`NetAdaptOptions`.
        target: target name; its ``profile`` key gives the latency table unless ``profile``
            is given, and latency is measured only where the target is this machine (cpu).
        profile: a latency look-up table (shipped name, path, or loaded dict). A table
            that does not cover the model (another input size) is dropped for measurement
            when latency can be measured, with a note.
        device: a device URI (``ssh://``, ``adb://``, ``agent://``) to measure latency on,
            instead of this machine.
        data_source: how ``data`` was loaded (``digits``, a path), recorded so that
            :func:`resume` can load it again.
        zoo: the reference's zoo name and width, for the width-multiplier baseline.
        trust_model: the reference may hold code-carrying layers (see
            :func:`edgekit.models._io.load_keras_model`).
        executor: runs the proposals (default: in this process).
        progress: receives one line per step.
        training_callbacks: makes Keras callbacks (a progress bar) for the result's final
            training and the width baseline's.
        on_iteration: called with each iteration's record after it is checkpointed.

    Returns:
        The report (see :func:`edgekit.search.netadapt_report`); also written as
        ``netadapt.json`` in ``out_dir`` with the chart ``netadapt.png``.

    Raises:
        BadInputError: a bad option or budget, a budget above the reference, latency with
            neither a profile nor a way to measure, a model the data does not fit, or an
            ``out_dir`` that holds something else.
    """
    opts = options or NetAdaptOptions()
    budgets = opts.check()
    if opts.channel_multiple is None:  # the target's, recorded so that a resume keeps it
        from edgekit.targets import load_target

        multiple = load_target(target).channel_multiple if target is not None else 1
        opts = dataclasses.replace(opts, channel_multiple=multiple)
    out = Path(out_dir)
    check_out_dir(out)
    _check_model(model, data)
    if zoo is None and opts.baseline:
        raise BadInputError(
            "the width-multiplier baseline needs a zoo model: pass --model ZOO_NAME "
            "(not a .keras file), or --no-baseline"
        )
    if opts.final == "scratch" and opts.final_epochs is None:
        if zoo is None:
            raise BadInputError(
                "--final scratch trains the result from fresh weights as long as the "
                "reference trained plus the search and --long-epochs, but a .keras reference "
                "does not say how long it trained: give --final-epochs N"
            )
        if zoo.train_epochs + opts.long_epochs == 0:
            raise BadInputError(
                "--final scratch trains the result from fresh weights as long as the "
                "reference trained plus the search and --long-epochs, but --train-epochs and "
                "--long-epochs are both 0: give --final-epochs N"
            )
    from edgekit.measure.lut import save_profile
    from edgekit.models._io import save_keras_model

    # Measuring the reference writes its artifact under ``out``: from here on, a failure
    # (a budget above the measured reference, a kill) must leave the folder as it was.
    created = not out.exists()
    try:
        meter = make_meter(
            list(opts.resources),
            target,
            profile,
            opts.measure,
            out / "artifacts",
            data.x_train,
            runs=opts.measure_runs,
            device=device,
            measure_fn=executor_measure_fn(executor),
        )
        say = sayer(progress)
        if "latency" in opts.resources:
            meter.check_profile(model)
        for note in meter.notes:
            say(note)
        reference_values, reference_measured = _measured_reference(
            model, opts.resources, meter, say
        )
        budget_values = _resolve_budgets(budgets, reference_values)
        out.mkdir(parents=True, exist_ok=True)
        save_keras_model(model, out / "reference.keras")
        if meter.profile is not None:
            save_profile(meter.profile, out / "profile.json")
        state = _initial_state(
            out, model, data, meter, opts, budgets, reference_values, budget_values, say,
            reference_measured,
        )  # fmt: skip
        state.update(
            {
                "target": target,
                "device": device,
                "trust_model": bool(trust_model),
                "data": {"source": data_source, **data.summary()},
                "zoo": asdict(zoo) if zoo else None,
            }
        )
        write_state(out, state)
    except BaseException:
        # Until the first checkpoint exists there is nothing to resume: leave no folder.
        if created:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    return Search(out, state, data, meter, executor, say, training_callbacks, on_iteration).run()


def _initial_state(
    out: Path,
    model: Any,
    data: Dataset,
    meter: Meter,
    opts: NetAdaptOptions,
    budgets: list[Budget],
    reference_values: dict[str, float],
    budget_values: dict[str, float],
    say: Progress,
    reference_measured: float | None,
) -> dict[str, Any]:
    say(
        "reference: "
        + ", ".join(f"{r} {get_resource(r).format(v)}" for r, v in reference_values.items())
        + "; budget: "
        + ", ".join(f"{r} {get_resource(r).format(v)}" for r, v in budget_values.items())
    )
    reference = describe(
        model, data, meter, "reference", out / "reference.keras", say, measured=reference_measured
    )
    return {
        "schema": STATE_SCHEMA,
        "phase": "search",
        "iteration": 0,
        "status": None,
        "message": "",
        "options": opts.as_dict(),
        "budgets": [{**b.as_dict(), "value": budget_values[b.resource]} for b in budgets],
        "initial": reference_values,
        "reference": reference,
        "current": {"model": "reference.keras", "values": reference_values},
        "history": [],
        "seeds": {"base": opts.seed},
        "profile": "profile.json" if meter.profile is not None else None,
        "profile_name": meter.profile.get("name") if meter.profile is not None else None,
        "latency_scale": meter.scale,
        "notes": list(meter.notes),
        "precision": meter.precision,
        "threads": meter.threads,
        "can_measure": meter.can_measure,
        "width_baseline": [],
        "result": None,
        "seconds": 0.0,
    }


def resume(
    out_dir: str | Path,
    *,
    data: Dataset | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
    training_callbacks: Callable[[int], list[Any]] | None = None,
    on_iteration: IterationHook | None = None,
) -> dict[str, Any]:
    """Continue a NetAdapt run from its last checkpoint in ``out_dir``.

    The run's options, budgets, target, profile and seed are read from the checkpoint; the
    result is the one the uninterrupted run would have given. A finished run returns its
    report again.

    Args:
        out_dir: the folder of a run started by :func:`netadapt`.
        data: the data set; by default loaded again from the recorded source.
        executor, progress, training_callbacks, on_iteration: as for :func:`netadapt`.

    Raises:
        BadInputError: ``out_dir`` holds no NetAdapt checkpoint, or the data cannot be
            loaded again (pass ``data``).
    """
    out = Path(out_dir)
    path = out / STATE
    if not path.is_file():
        raise BadInputError(
            f"--resume '{out}' holds no NetAdapt checkpoint ({STATE}); pass the --out folder "
            "of a run started with `edgekit search netadapt`"
        )
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BadInputError(f"--resume '{out}': {STATE} cannot be read ({err})") from err
    if state.get("schema") != STATE_SCHEMA:
        raise BadInputError(
            f"--resume '{out}': {STATE} has schema {state.get('schema')!r}, expected "
            f"'{STATE_SCHEMA}'"
        )
    if data is None:
        from edgekit.data import load_dataset

        source = state["data"].get("source")
        if not source:
            raise BadInputError(
                f"--resume '{out}': the run's data set was passed in memory; pass it again"
            )
        data = load_dataset(source, tuple(state["data"]["input_shape"]))  # type: ignore[arg-type]
    opts = NetAdaptOptions.from_dict(state["options"])
    opts.check()
    meter = make_meter(
        list(opts.resources),
        state["target"],
        out / state["profile"] if state["profile"] else None,
        opts.measure,
        out / "artifacts",
        data.x_train,
        runs=opts.measure_runs,
        device=state.get("device"),
        target_profile=False,  # the run's own table (saved in its folder), or none
        measure_fn=executor_measure_fn(executor),
    )
    meter.scale = float(state.get("latency_scale", 1.0))
    # What the run measured and counted with, even when its table was dropped (a table not
    # covering the model): a user's fp32 table must not turn into int8 on a resume.
    meter.precision = str(state.get("precision") or meter.precision)
    if state.get("threads") is not None:
        meter.threads = int(state["threads"])
    meter.notes = list(state.get("notes", []))
    ref = state["reference"]
    if ref.get("artifact") and ref.get("latency_ms_measured") is not None:
        meter.anchor = (Path(ref["artifact"]), float(ref["latency_ms_measured"]))
    say = sayer(progress)
    say(f"resuming {out} after iteration {state['iteration']} ({state['phase']})")
    return Search(out, state, data, meter, executor, say, training_callbacks, on_iteration).run()


# --------------------------------------------------------------------------- checks


def check_out_dir(out: str | Path) -> None:
    """Refuse an output folder that holds anything but nothing.

    Raises:
        BadInputError: ``out`` holds a NetAdapt run (resume it instead) or other files.
    """
    out = Path(out)
    if not out.exists():
        return
    if out.is_dir() and (out / STATE).is_file():
        raise BadInputError(
            f"--out '{out}' already holds a NetAdapt run; continue it with --resume {out} "
            "or choose a new --out"
        )
    if not out.is_dir() or any(out.iterdir()):
        raise BadInputError(
            f"--out '{out}' exists and was not written by edgekit search netadapt; choose a "
            "new folder"
        )


def _check_model(model: Any, data: Dataset) -> None:
    from edgekit.compress import prunable_groups

    classes = int(model.outputs[0].shape[-1])
    if classes != data.num_classes:
        raise BadInputError(
            f"model has {classes} outputs but the data has {data.num_classes} classes; pass "
            "--data with the data set the model was trained on"
        )
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if shape != data.input_shape:
        raise BadInputError(
            f"model takes {shape} inputs but the data was loaded at {data.input_shape}"
        )
    if not prunable_groups(model):
        raise BadInputError(f"model '{model.name}' has no prunable channel group")


def check_budgets(model: Any, options: NetAdaptOptions, meter: Meter) -> dict[str, float]:
    """The budgets of ``options`` for ``model``, in each resource's unit.

    The resources depend on the architecture only, so a zoo model can be checked before it
    is trained. An absolute latency budget is checked against the untrained network's
    measured latency where the meter can measure, as :func:`netadapt` will check the
    trained one's: the table's prediction can fall on the other side of the budget.

    Raises:
        BadInputError: a bad option or budget, a budget above the model's resource, or a
            latency the profile cannot predict.
    """
    budgets = options.check()
    if "latency" in options.resources:
        meter.check_profile(model)
    values = _reference_values(model, options.resources, meter)
    absolute = any(b.resource == "latency" and b.absolute is not None for b in budgets)
    if absolute and meter.can_measure:
        values["latency"] = meter.measure_ms(model, stem="untrained", fresh=True)
    return _resolve_budgets(budgets, values)


def executor_measure_fn(executor: Executor | None) -> Any:
    """How an executor measures on the node that holds the device (Ray), if it does."""
    fn = getattr(executor, "measure_fn", None)
    return fn() if fn is not None else None


def _measured_reference(
    model: Any, resources: Sequence[str], meter: Meter, say: Progress
) -> tuple[dict[str, float], float | None]:
    """The reference's resources, its latency measured where it can be.

    A relative latency budget is a share of the reference's measured latency; with a table,
    the table's predictions are scaled so that the reference's equals its measurement.
    """
    measured = None
    if "latency" in resources and meter.can_measure:
        say(f"measuring the reference ({meter.where})")
        measured = meter.measure_ms(model, stem="reference", fresh=True)
        meter.anchor = (meter.artifacts["reference"], measured)
        if meter.profile is not None:
            predicted = meter.predict_ms(model)
            if predicted is not None:
                meter.calibrate(predicted, measured)
                say(
                    f"the table predicts {predicted:.3f} ms, measured {measured:.3f} ms: "
                    f"predictions are scaled by {meter.scale:.3f}"
                )
    values = _reference_values(model, resources, meter)
    if measured is not None:
        values["latency"] = measured
    return values, measured


def _reference_values(model: Any, resources: Sequence[str], meter: Meter) -> dict[str, float]:
    values = resource_values(model, resources, meter)
    if values is None:  # a layer outside the table: let the predictor say which, and why
        from edgekit.measure.lut import predict_latency

        assert meter.profile is not None
        predict_latency(model, meter.profile)
        raise BadInputError(f"the latency of model '{model.name}' cannot be predicted")
    return values


def _resolve_budgets(budgets: list[Budget], reference: dict[str, float]) -> dict[str, float]:
    out = {}
    for b in budgets:
        res = get_resource(b.resource)
        value = b.value(reference[b.resource])
        if value > reference[b.resource] * (1 + 1e-9):
            raise BadInputError(
                f"{b.resource} budget {b.text} ({res.format(value)}) is above the reference's "
                f"{res.format(reference[b.resource])}; a search only shrinks the network: "
                "give a budget at or below it (e.g. 0.5x)"
            )
        out[b.resource] = value
    return out
