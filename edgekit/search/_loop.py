"""The NetAdapt loop: iterations, proposals, the result's final training and the width baseline,
driven by a checkpointed state (see :mod:`edgekit.search.netadapt`)."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import write_json_atomic
from edgekit.data import Dataset
from edgekit.search._executor import (
    Executor,
    ProposalTask,
    SerialExecutor,
    executor_name,
    val_accuracy,
)
from edgekit.search._options import (
    CHART,
    REPORT,
    STATE,
    IterationHook,
    NetAdaptOptions,
    Progress,
    ZooSpec,
    train_zoo_model,
)
from edgekit.search._report import netadapt_report, write_chart
from edgekit.search._resources import Meter, get_resource, measure_artifacts, plan_evaluator
from edgekit.search._schedule import (
    derive_seed,
    iteration_target,
    largest_feasible,
    meets,
    resource_reduction,
)

log = logging.getLogger(__name__)


@dataclass
class Proposal:
    """One network proposed in an iteration: a group and its kept channels."""

    group: str
    channels_before: int
    channels_after: int
    values: dict[str, float]
    order: int
    accuracy: float = float("nan")
    loss: float = float("nan")
    path: str = ""
    seed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
            "resources": rounded(self.values),
            "accuracy": round(self.accuracy, 6),
            "val_loss": self.loss,
            "seed": self.seed,
            "seconds": self.seconds,
        }


def proposal_rank(p: Proposal, primary: str) -> tuple[float, float, float, int]:
    """The order an iteration's proposals are kept in: the most accurate first (the paper's
    rule).

    Validation accuracy counts whole images (one of 270 on digits), so after a short
    fine-tuning several proposals often read exactly the same; the lower validation loss (how
    much confidence the pruned network kept) decides between them, then the lower primary
    resource, then the proposal order. A proposal without a loss ranks after those with one.
    """
    loss = p.loss if p.loss == p.loss else float("inf")
    return (-p.accuracy, loss, p.values[primary], p.order)


@dataclass
class _Attempt:
    """One try at an iteration's step: its targets and the proposals that reach them."""

    step: float
    margin: float
    targets: dict[str, float]
    under_budget: bool  # the latency target is the floor ``1 - margin`` under the budget
    proposals: list[Proposal] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


@dataclass
class Search:
    """One run: its folder, its state, and how to evaluate and fine-tune."""

    out: Path
    state: dict[str, Any]
    data: Dataset
    meter: Meter
    executor: Executor | None
    say: Progress
    training_callbacks: Callable[[int], list[Any]] | None
    on_iteration: IterationHook | None
    opts: NetAdaptOptions = field(init=False)
    budget: dict[str, float] = field(init=False)
    _teacher: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.opts = NetAdaptOptions.from_dict(self.state["options"])
        self.budget = {b["resource"]: float(b["value"]) for b in self.state["budgets"]}

    @property
    def primary(self) -> str:
        return self.opts.resources[0]

    def run(self) -> dict[str, Any]:
        executor = self.executor or SerialExecutor()
        self.state["executor"] = executor_name(executor)
        try:
            if self.state["phase"] == "search":
                executor.start(self.data)
                self._search(executor)
            if self.state["phase"] == "finetune":
                self._final()
            if self.state["phase"] == "baseline":
                self._baseline()
            if self.state["phase"] == "confirm":
                self._confirm()
        finally:
            executor.close()
        report = netadapt_report(self.state, self.out)
        write_json_atomic(self.out / REPORT, report)
        try:
            write_chart(report, self.out / CHART)
        except Exception as err:  # a chart is a convenience; never lose the run over it
            log.warning("chart not written: %s", err)
        return report

    # ------------------------------------------------------------------ iterations

    def _search(self, executor: Executor) -> None:
        from edgekit.models._io import load_keras_model

        while self.state["phase"] == "search":
            values = {k: float(v) for k, v in self.state["current"]["values"].items()}
            if meets(values, self.budget):
                values = self._confirm_latency(values)
            if meets(values, self.budget):
                self._end_search("budget_met", "every budget is met")
                break
            i = int(self.state["iteration"]) + 1
            if i > self.opts.max_iterations:
                self._end_search(
                    "max_iterations",
                    f"stopped after {self.opts.max_iterations} iterations before meeting the "
                    "budget; raise --max-iterations or --init-fraction",
                )
                break
            t0 = time.perf_counter()
            model_path = self.out / self.state["current"]["model"]
            model = load_keras_model(model_path, trust=self.state["trust_model"])
            # The schedule's step; if fewer groups than --proposals can be pruned that far,
            # half of it, and so on down to MIN_STEP, keeping the largest step that gives the
            # most proposals. A step no group can make is not yet a budget the network
            # cannot meet; and a step only one group can make forces its pruning whatever it
            # costs (MobileNet v1 0.5x: the stem cut 32->8, validation accuracy 0.10).
            step = 1.0
            margin = latency_margin(self.state["history"])
            cache: dict[tuple[str, int], dict[str, float] | None] = {}
            ranked = self._ranked_groups(model)
            planned = plan_evaluator(model, self.opts.resources, self.meter, self.opts.criterion)
            wanted = min(self.opts.proposals or len(ranked), len(ranked))
            best: _Attempt | None = None
            while True:
                attempt = _Attempt(step, margin, *self._targets(i, values, step, margin))
                attempt.proposals, attempt.unreachable = self._propose(
                    model, ranked, values, attempt.targets, cache, planned
                )
                if attempt.proposals and (
                    best is None or len(attempt.proposals) > len(best.proposals)
                ):
                    best = attempt
                if len(attempt.proposals) >= wanted:
                    break
                if step > MIN_STEP:
                    step /= 2
                elif margin and best is None:  # under the budget is out of reach: the
                    margin = 0.0  # budget itself may not be
                else:
                    break
            chosen = best or attempt
            proposals, unreachable, targets = chosen.proposals, chosen.unreachable, chosen.targets
            step = chosen.step
            self.say(
                f"iteration {i}: target "
                + ", ".join(f"{r} {get_resource(r).format(t)}" for r, t in targets.items())
                + ("" if step == 1.0 else f" ({step:g} of the scheduled step)")
                + (f" ({chosen.margin:.1%} under the budget)" if chosen.under_budget else "")
            )
            del model
            if not proposals:
                self._end_search(
                    "budget_unreachable",
                    f"iteration {i}: no channel group can be pruned to reach "
                    + ", ".join(f"{r} {get_resource(r).format(t)}" for r, t in targets.items())
                    + f" ({MIN_STEP:g} of the scheduled step; the budget is below the smallest "
                    "network pruning one group at a time reaches); "
                    f"keeping the network of iteration {i - 1}",
                )
                break
            planned_s = time.perf_counter() - t0
            record = self._evaluate(executor, i, model_path, proposals, targets, unreachable)
            record["phase_seconds"] = {"plan": round(planned_s, 2), **record["phase_seconds"]}
            record["step"] = step
            if "latency" in self.opts.resources:
                record["latency_margin"] = round(chosen.margin, 6)
            record["seconds"] = round(time.perf_counter() - t0, 2)
            self.state["seconds"] = round(self.state["seconds"] + record["seconds"], 2)
            self.state["history"].append(record)
            self.state["iteration"] = i
            write_state(self.out, self.state)
            self._clean(i)
            if self.on_iteration is not None:
                self.on_iteration(record)

    def _confirm_latency(self, values: dict[str, float]) -> dict[str, float]:
        """Before the search ends on a measured latency, time the network again, longer
        (:func:`confirm_runs`), side by side with the reference; the search goes on if
        that says it is over the budget.

        A chosen network is timed in a short measurement; one that lands just under the
        budget can be over it in the final, longer one (MobileNet v1 at 176 px: 0.495 of the
        reference when chosen, 0.531 in the final measurement of a 0.5x search). The
        confirmed latency replaces the chosen one, and rescales the table.

        The long timing can be the odd one out too: in a MobileNet v2 0.5x search at 128 px
        (AVX2), two networks under the budget in their short timings (0.844, 0.825 ms for
        0.853) read 0.959 and 0.902 ms long, rescaled the table by 1.14, and the search
        pruned twice more, to a result that four of five later timings put at 0.77-0.80 ms
        (one noisy session at 0.90). So when the long timing reverses the short one's
        verdict, the network is timed long once more, and the median of the three timings
        decides: two of them agreeing on which side of the budget it is.
        """
        current = self.state["current"]
        if (
            "latency" not in self.opts.resources
            or not self.meter.can_measure
            or "latency_ms_confirmed" in current
            or not self.state["history"]
        ):
            return values
        from edgekit.models._io import load_keras_model

        model = load_keras_model(self.out / current["model"], trust=self.state["trust_model"])
        runs = confirm_runs(self.opts)
        self.say(f"confirming the latency of {current['model']} ({runs} runs)")
        confirmed = self.meter.measure_ms(model, stem="confirm", fresh=True, runs=runs)
        budget = self.budget["latency"]
        short = float(values["latency"])
        timings = [confirmed]
        if confirmed > budget >= short:
            again = self.meter.retime(model, "confirm", runs)
            if again is not None:
                timings.append(again)
                confirmed = float(np.median([short, *timings]))
        del model
        last = self.state["history"][-1]
        if last.get("latency_ms_predicted") is not None:
            self.meter.calibrate(float(last["latency_ms_predicted"]), confirmed)
            self.state["latency_scale"] = self.meter.scale
        last["latency_ms_confirmed"] = round(confirmed, 6)
        last["latency_ms_confirm_timings"] = [round(t, 6) for t in timings]
        values = {**values, "latency": confirmed}
        current["values"] = values
        current["latency_ms_confirmed"] = round(confirmed, 6)
        if len(timings) > 1:
            self.say(
                f"  timed {timings[0]:.3f} ms, over the budget its short timing "
                f"({short:.3f} ms) was under; timed again: {timings[1]:.3f} ms"
            )
        self.say(
            f"  confirmed {confirmed:.3f} ms against the budget's {budget:.3f} ms"
            + ("" if len(timings) == 1 else " (the median of the three timings)")
            + ("" if confirmed <= budget else ": over it, the search goes on")
        )
        write_state(self.out, self.state)
        return values

    def _targets(
        self, i: int, values: dict[str, float], step: float = 1.0, margin: float = 0.0
    ) -> tuple[dict[str, float], bool]:
        """Iteration ``i``'s targets: ``step`` times the schedule's reduction, not below the
        budget (latency: not below ``1 - margin`` of it); and whether the latency target is
        that floor under the budget (``margin`` > 0 and the step reaches past the budget)."""
        initial = self.state["initial"]
        targets: dict[str, float] = {}
        under = False
        for r in self.opts.resources:
            floor = self.budget[r] * (1.0 - margin if r == "latency" else 1.0)
            reduction = step * resource_reduction(
                initial[r], i, self.opts.init_fraction, self.opts.decay
            )
            targets[r] = iteration_target(floor, values[r], reduction)
            under = under or (r == "latency" and margin > 0 and values[r] - reduction <= floor)
        return targets, under

    def _ranked_groups(self, model: Any) -> list[tuple[Any, int]]:
        """``model``'s prunable groups with their model order, the largest share of the
        primary resource first (ties: model order)."""
        from edgekit.compress import prunable_groups

        groups = prunable_groups(model)
        shares = get_resource(self.primary).shares(model, self.meter)
        share = [
            sum(shares.get(name, 0.0) for name in {*g.producers, *g.consumers}) for g in groups
        ]
        order = sorted(range(len(groups)), key=lambda n: (-share[n], n))
        return [(groups[n], n) for n in order]

    def _propose(
        self,
        model: Any,
        ranked: list[tuple[Any, int]],
        values: dict[str, float],
        targets: dict[str, float],
        cache: dict[tuple[str, int], dict[str, float] | None] | None = None,
        planned: Callable[[dict[str, int]], dict[str, float] | None] | None = None,
    ) -> tuple[list[Proposal], list[str]]:
        # Screening scores every group that can make the step and keeps K of them later.
        k = len(ranked) if self.opts.screen_batches else (self.opts.proposals or len(ranked))
        proposals: list[Proposal] = []
        unreachable: list[str] = []
        for group, order in ranked:
            if len(proposals) >= k:
                break
            found = self._fewest_removed(model, group, values, targets, cache, planned)
            if found is None:
                unreachable.append(group.name)
                continue
            kept, kept_values = found
            proposals.append(Proposal(group.name, group.channel_count, kept, kept_values, order))
        return proposals, unreachable

    def _fewest_removed(
        self,
        model: Any,
        group: Any,
        values: dict[str, float],
        targets: dict[str, float],
        cache: dict[tuple[str, int], dict[str, float] | None] | None = None,
        planned: Callable[[dict[str, int]], dict[str, float] | None] | None = None,
    ) -> tuple[int, dict[str, float]] | None:
        return fewest_channels_removed(
            model, group, targets, self.opts.resources, self.meter, self.opts.criterion, values,
            multiple=self.opts.channel_multiple or 1, cache=cache, planned=planned,
        )  # fmt: skip

    def _evaluate(
        self,
        executor: Executor,
        i: int,
        model_path: Path,
        proposals: list[Proposal],
        targets: dict[str, float],
        unreachable: list[str],
    ) -> dict[str, Any]:
        folder = self.out / "proposals" / f"iter_{i:04d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        screened: list[dict[str, Any]] = []
        k = self.opts.proposals
        t0 = time.perf_counter()
        if self.opts.screen_batches and k is not None and len(proposals) > k:
            proposals, screened = self._screen(executor, i, model_path, proposals, k)
        t1 = time.perf_counter()
        tasks = []
        for n, p in enumerate(proposals):
            p.seed = derive_seed(self.opts.seed, "proposal", i, p.group)
            out_path = str(folder / f"p{n:03d}_{p.group}.keras")
            steps, bn_batches = self.opts.short_steps, self.opts.bn_batches
            tasks.append(self._task(n, model_path, p, out_path, p.seed, steps, bn_batches))
        self.say(
            f"  fine-tuning {len(tasks)} proposal(s) for {self.opts.short_steps} batches: "
            + ", ".join(f"{p.group} {p.channels_before}->{p.channels_after}" for p in proposals)
        )
        for p, r in zip(proposals, executor.map(tasks), strict=True):
            p.accuracy, p.loss, p.path, p.seconds = r.accuracy, r.loss, r.out_path, r.seconds
        t2 = time.perf_counter()
        best = min(proposals, key=lambda p: proposal_rank(p, self.primary))
        net = Path("nets") / f"net_{i:04d}.keras"
        (self.out / "nets").mkdir(exist_ok=True)
        Path(best.path).replace(self.out / net)
        measured = None
        timings: list[float] = []
        scale = self.meter.scale
        predicted = None
        if self.meter.profile is not None and "latency" in best.values:
            predicted = best.values["latency"] / scale  # the table's own figure
        values = dict(best.values)
        if "latency" in self.opts.resources and self.meter.can_measure:
            from edgekit.models._io import load_keras_model

            chosen = load_keras_model(self.out / net, trust=self.state["trust_model"])
            expected = best.values["latency"] if predicted is not None else None
            measured, timings = self.meter.measure_checked(chosen, f"net_{i:04d}", expected)
            if len(timings) > 1 and expected:
                self.say(
                    f"  timed {timings[0]:.3f} ms, {timings[0] / expected - 1:+.0%} off the "
                    f"table's {expected:.3f} ms: timed again, "
                    + ", ".join(f"{t:.3f}" for t in timings[1:])
                    + f" ms; their median {measured:.3f} ms counts"
                )
            # Confirmed by measurement: the next iteration starts from (and the stopping rule
            # reads) the measured latency, and the table is rescaled to agree with it.
            values["latency"] = measured
            if predicted is not None:
                self.meter.calibrate(predicted, measured)
                self.state["latency_scale"] = self.meter.scale
        record = {
            "iteration": i,
            "group": best.group,
            "channels_before": best.channels_before,
            "channels_after": best.channels_after,
            "filters_removed": best.channels_before - best.channels_after,
            "targets": rounded(targets),
            "resources": rounded(best.values),
            "latency_ms_predicted": round_or_none(predicted),
            "latency_ms_measured": round_or_none(measured),
            "latency_ms_timings": [round(t, 6) for t in timings] or None,
            "latency_scale": round(scale, 6) if predicted is not None else None,
            "accuracy": round(best.accuracy, 6),
            "model": str(net),
            "proposals": [p.as_dict() for p in proposals],
            "unreachable": unreachable,
        }
        if screened:
            record["screened"] = screened
        # Where the iteration's time went (the plan is added by the caller): the pool's
        # screening and fine-tuning, and the rest (timing the chosen network, saving).
        record["phase_seconds"] = {
            "screen": round(t1 - t0, 2),
            "fine_tune": round(t2 - t1, 2),
            "measure": round(time.perf_counter() - t2, 2),
        }
        self.state["current"] = {"model": str(net), "values": values}
        self.state["seeds"].setdefault("proposals", {})[str(i)] = {
            p.group: p.seed for p in proposals
        }
        self.say(
            f"  chose {best.group} {best.channels_before}->{best.channels_after}: val accuracy "
            f"{best.accuracy:.4f} (loss {best.loss:.4f}), "
            + ", ".join(f"{r} {get_resource(r).format(v)}" for r, v in best.values.items())
            + (f" (measured {measured:.3f} ms)" if measured is not None else "")
        )
        return record

    def _task(
        self, n: int, model_path: Path, p: Proposal, out_path: str, seed: int, steps: int,
        bn_batches: int, save: bool = True,
    ) -> ProposalTask:  # fmt: skip
        """The task that prunes ``p`` from ``model_path`` with this run's training settings."""
        return ProposalTask(
            index=n,
            model_path=str(model_path),
            plan={p.group: p.channels_after},
            out_path=out_path,
            seed=seed,
            steps=steps,
            batch_size=self.opts.batch_size,
            learning_rate=self.opts.learning_rate,
            criterion=self.opts.criterion,
            bn_batches=bn_batches,
            trust=bool(self.state["trust_model"]),
            save=save,
        )

    def _screen(
        self,
        executor: Executor,
        i: int,
        model_path: Path,
        proposals: list[Proposal],
        k: int,
    ) -> tuple[list[Proposal], list[dict[str, Any]]]:
        """The ``k`` of ``proposals`` to fine-tune: each is pruned, its BatchNorm statistics
        re-estimated on ``screen_batches`` training batches, and scored on the validation
        split without fine-tuning; the best ``k`` by :func:`proposal_rank` are kept, in
        their proposal order. Returns them and every proposal's scores, for the history.

        Every proposal of the iteration is re-estimated on the same batches (one seed), so
        that the ranking does not also rank which images each one drew."""
        seed = derive_seed(self.opts.seed, "screen", i)
        tasks = [
            self._task(n, model_path, p, "", seed, 0, self.opts.screen_batches, save=False)
            for n, p in enumerate(proposals)
        ]
        self.say(
            f"  screening {len(tasks)} proposals (BatchNorm statistics re-estimated on "
            f"{self.opts.screen_batches} batches, no fine-tuning) for the {k} to fine-tune"
        )
        scored = [
            replace(p, accuracy=r.accuracy, loss=r.loss, seconds=r.seconds)
            for p, r in zip(proposals, executor.map(tasks), strict=True)
        ]
        best = sorted(range(len(scored)), key=lambda n: proposal_rank(scored[n], self.primary))
        keep = sorted(best[:k])
        record = [
            {
                "group": p.group,
                "channels_after": p.channels_after,
                "accuracy": round(p.accuracy, 6),
                "val_loss": p.loss,
                "kept": n in keep,
                "seconds": p.seconds,
            }
            for n, p in enumerate(scored)
        ]
        return [proposals[n] for n in keep], record

    def _clean(self, i: int) -> None:
        shutil.rmtree(self.out / "proposals", ignore_errors=True)
        keep = self.out / self.state["current"]["model"]
        for old in (self.out / "nets").glob("net_*.keras"):
            if old != keep:
                old.unlink(missing_ok=True)

    def _end_search(self, status: str, message: str) -> None:
        self.state["status"] = status
        self.state["message"] = message
        self.state["phase"] = "finetune"
        write_state(self.out, self.state)
        self.say(f"search ended ({status}): {message}")

    # ------------------------------------------------------------------ the end

    def _final(self) -> None:
        from edgekit.models._io import load_keras_model, save_keras_model
        from edgekit.train import TrainConfig, train_model

        t0 = time.perf_counter()
        model = load_keras_model(
            self.out / self.state["current"]["model"], trust=self.state["trust_model"]
        )
        teacher = self.teacher() if self.opts.distill else None
        if self.opts.final == "scratch":
            epochs = self.baseline_epochs()
            seed = derive_seed(self.opts.seed, "scratch")
            self.state["seeds"]["scratch"] = seed
            how = ", distilled from the reference" if teacher is not None else ""
            self.say(
                f"training the searched architecture from fresh weights for {epochs} "
                f"epoch(s){how} (--final scratch)"
            )
            model = train_from_scratch(
                model, self.data, epochs, seed, batch_size=self.opts.batch_size,
                callbacks=self.training_callbacks(epochs) if self.training_callbacks else None,
                teacher=teacher, temperature=self.opts.distill_temperature,
                lam=self.opts.distill_lam,
            )  # fmt: skip
            training = {"how": "scratch", "epochs": epochs, "seed": seed}
        elif (epochs := self.opts.long_epochs) > 0:
            seed = derive_seed(self.opts.seed, "long")
            self.state["seeds"]["long"] = seed
            callbacks = self.training_callbacks(epochs) if self.training_callbacks else []
            if self.opts.distill:
                self.say(
                    f"fine-tuning the result for {epochs} epoch(s), distilled from the reference"
                )
                distill_from_reference(
                    model, teacher, self.data, epochs, self.opts.long_learning_rate,
                    seed, callbacks, batch_size=self.opts.batch_size,
                    temperature=self.opts.distill_temperature, lam=self.opts.distill_lam,
                )  # fmt: skip
            else:
                self.say(f"fine-tuning the result for {epochs} epoch(s)")
                cfg = TrainConfig(
                    epochs=epochs,
                    batch_size=self.opts.batch_size,
                    learning_rate=self.opts.long_learning_rate,
                    seed=seed,
                )
                train_model(model, self.data, cfg, callbacks=callbacks)
            training = {"how": "fine-tune", "epochs": epochs, "seed": seed}
        else:
            training = {"how": "fine-tune", "epochs": 0, "seed": None}
        training["distilled"] = teacher is not None and training["epochs"] > 0
        training["seconds"] = round(time.perf_counter() - t0, 2)
        path = save_keras_model(model, self.out / "result.keras")
        self.state["result"] = describe(model, self.data, self.meter, "result", path, self.say)
        self.state["result"]["training"] = training
        self.state["result"]["values"] = self._values(model, self.state["result"])
        self.state["seconds"] = round(self.state["seconds"] + time.perf_counter() - t0, 2)
        self.state["phase"] = "baseline" if self._wants_baseline() else "confirm"
        write_state(self.out, self.state)

    def teacher(self) -> Any:
        """The reference (Net_0), the teacher of ``--distill``; loaded once."""
        from edgekit.models._io import load_keras_model

        if self._teacher is None:
            self._teacher = load_keras_model(
                self.out / "reference.keras", trust=self.state["trust_model"]
            )
        return self._teacher

    def _values(self, model: Any, described: dict[str, Any]) -> dict[str, float]:
        """A finished network's resources, its latency as measured when it was."""
        values = resource_values(model, self.opts.resources, self.meter) or {}
        if "latency" in values and described.get("latency_ms_measured") is not None:
            values["latency"] = described["latency_ms_measured"]
        return rounded(values)

    def _confirm(self) -> None:
        """Measure the reference, the result and the baseline side by side: the figures the
        report compares come from one session, alternating, on the same machine state."""
        stems = {"reference": self.state["reference"], "result": self.state["result"]}
        for entry in self.state["width_baseline"]:
            stems[f"width_{entry['width']:g}"] = entry
        paths = {k: v.get("artifact") for k, v in stems.items()}
        if "latency" in self.opts.resources and self.meter.can_measure and all(paths.values()):
            runs = confirm_runs(self.opts)
            self.say(
                f"measuring {', '.join(stems)} side by side ({runs} runs each, {self.meter.where})"
            )
            stats = measure_artifacts(
                {k: Path(p) for k, p in paths.items()}, self.meter, runs, self.data.x_test[:1]
            )
            self.state["side_by_side"] = {
                "runs": runs,
                "how": (
                    f"one after another on {self.meter.where}"
                    if self.meter.remote
                    else "alternating rounds in one process"
                ),
                "latency_ms": stats,
            }
            for key, entry in stems.items():
                entry["latency_ms"] = round(stats[key]["p50"], 6)
                entry["latency"] = stats[key]
                if "latency" in entry.get("values", {}):
                    entry["values"]["latency"] = entry["latency_ms"]
        self.state["phase"] = "done"
        write_state(self.out, self.state)

    def _wants_baseline(self) -> bool:
        return bool(self.opts.baseline and self.state.get("zoo"))

    def baseline_epochs(self) -> int:
        """Epochs of the width baseline: those a fine-tuned NetAdapt result's weights see
        (see :func:`result_epochs`), or ``--final-epochs``. Under ``--final scratch`` the
        result trains this long too."""
        if self.opts.final_epochs is not None:
            return self.opts.final_epochs
        zoo = self.state["zoo"] or {}
        return result_epochs(
            int(zoo.get("train_epochs", 0)),
            len(self.state["history"]),
            self.opts,
            len(self.data.x_train),
        )

    def _baseline(self) -> None:
        zoo = ZooSpec(**self.state["zoo"])
        epochs = self.baseline_epochs()
        done = {round(e["multiplier"], 6) for e in self.state["width_baseline"]}
        for multiplier in self.opts.baseline_widths:
            if round(multiplier, 6) in done:
                continue
            model, entry = train_width(
                zoo, multiplier, epochs, self.data, self.meter, self.out / "baseline", self.say,
                seed=self.opts.seed, batch_size=self.opts.batch_size,
                callbacks=self.training_callbacks(epochs) if self.training_callbacks else None,
                teacher=self.teacher() if self.opts.distill else None,
                temperature=self.opts.distill_temperature, lam=self.opts.distill_lam,
            )  # fmt: skip
            entry["values"] = self._values(model, entry)
            self.state["width_baseline"].append(entry)
            self.state["seconds"] = round(self.state["seconds"] + entry["seconds"], 2)
            write_state(self.out, self.state)
        self.state["phase"] = "confirm"
        write_state(self.out, self.state)


def train_width(
    zoo: ZooSpec,
    multiplier: float,
    epochs: int,
    data: Dataset,
    meter: Meter,
    folder: Path,
    say: Progress,
    *,
    seed: int = 0,
    batch_size: int = 32,
    callbacks: list[Any] | None = None,
    teacher: Any = None,
    temperature: float = NetAdaptOptions.distill_temperature,
    lam: float = NetAdaptOptions.distill_lam,
) -> tuple[Any, dict[str, Any]]:
    """One point of the width-multiplier baseline: ``zoo`` at ``multiplier`` times its
    width, trained ``epochs`` epochs from scratch (seeded from ``seed`` and the width),
    saved in ``folder`` and described (:func:`describe`: accuracy, cost, measured latency
    and artifact) as ``width_<width>``.

    With a ``teacher`` (the reference, under ``--distill``) every epoch is distilled from it
    (softmax ``temperature``, labels weighted ``lam``), at the learning rate of plain
    training.

    Returns:
        The trained model and its entry (``width``, ``multiplier``, ``epochs``, ``seed``,
        ``seconds``, ``distilled`` besides what :func:`describe` gives).
    """
    from edgekit.models._io import save_keras_model
    from edgekit.train import TrainConfig

    t0 = time.perf_counter()
    width = round(zoo.width * multiplier, 6)
    how = ", distilled from the reference" if teacher is not None else ""
    say(f"baseline: {zoo.name} width {width:g}, {epochs} epochs{how}")
    width_seed = derive_seed(seed, "baseline", width)
    spec = ZooSpec(zoo.name, width, zoo.input_size, epochs)
    if teacher is None:
        model = train_zoo_model(spec, data, width_seed, batch_size, callbacks or [])
    else:
        model = train_zoo_model(replace(spec, train_epochs=0), data, width_seed, batch_size)
        distill_from_reference(
            model, teacher, data, epochs, TrainConfig.learning_rate, width_seed,
            callbacks or [], batch_size=batch_size, temperature=temperature, lam=lam,
        )  # fmt: skip
    path = save_keras_model(model, folder / f"width_{width:g}.keras")
    entry = describe(model, data, meter, f"width_{width:g}", path, say)
    entry.update(
        {
            "width": width,
            "multiplier": multiplier,
            "epochs": epochs,
            "seed": width_seed,
            "seconds": round(time.perf_counter() - t0, 2),
            "distilled": teacher is not None,
        }
    )
    return model, entry


def train_from_scratch(
    model: Any,
    data: Dataset,
    epochs: int,
    seed: int,
    *,
    batch_size: int = 32,
    callbacks: list[Any] | None = None,
    teacher: Any = None,
    temperature: float = NetAdaptOptions.distill_temperature,
    lam: float = NetAdaptOptions.distill_lam,
) -> Any:
    """``model``'s architecture (layers, names, channel counts) with fresh weights drawn
    from ``seed``, trained ``epochs`` epochs from scratch with the width baseline's recipe
    (:class:`edgekit.train.TrainConfig`'s learning rate and schedule; with a ``teacher``,
    distilled from it every epoch, as the baseline is under ``--distill``).

    Returns:
        The new model; ``model`` is not modified.
    """
    from edgekit._keras import keras
    from edgekit.train import TrainConfig, set_seed, train_model

    set_seed(seed)  # the initial weights too
    fresh = keras.models.clone_model(model)
    if teacher is None:
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed)
        train_model(fresh, data, cfg, callbacks=callbacks or [])
    else:
        distill_from_reference(
            fresh, teacher, data, epochs, TrainConfig.learning_rate, seed, callbacks or [],
            batch_size=batch_size, temperature=temperature, lam=lam,
        )  # fmt: skip
    return fresh


def distill_from_reference(
    model: Any,
    teacher: Any,
    data: Dataset,
    epochs: int,
    learning_rate: float,
    seed: int,
    callbacks: list[Any],
    *,
    batch_size: int,
    temperature: float,
    lam: float,
) -> None:
    """Train ``model`` ``epochs`` epochs by distillation from ``teacher`` (softmax
    ``temperature``, labels weighted ``lam``; cosine decay from ``learning_rate``)."""
    from edgekit.compress._steps import StepContext
    from edgekit.compress.distill import distill

    ctx = StepContext(
        data=data,
        seed=seed,
        batch_size=batch_size,
        training_callbacks=(lambda _epochs: callbacks) if callbacks else None,
    )
    distill(
        model,
        teacher,
        ctx,
        epochs=epochs,
        temperature=temperature,
        lam=lam,
        learning_rate=learning_rate,
    )


# --------------------------------------------------------------------------- helpers

# The smallest share of the scheduled step an iteration tries (halving from 1) before it
# decides that no channel group can be pruned any further toward the budget.
MIN_STEP = 0.125
# The most an iteration aims under the latency budget (see latency_margin).
MAX_MARGIN = 0.05


def latency_margin(history: Sequence[dict[str, Any]]) -> float:
    """How far under the latency budget the next iteration aims, from the ``history`` of
    iterations so far: the error of the (rescaled) table's prediction against the
    measurement of the chosen network, the median over the last five iterations; at least
    the last iteration's error if its network measured over its latency target (in the
    longer confirming timing, if that ran); at most
    :data:`MAX_MARGIN`; 0 before any.

    Aiming at the budget itself lands a network over it about half the time: on MobileNet v1
    at 176 px the table and a short timing disagree by 1-4%, and each network that lands
    just over the budget costs an iteration of a few channels (and the short fine-tuning's
    accuracy dip of a fresh pruning) to creep under it. The median alone was not enough near
    the end of a MobileNet v2 search: small cuts there save less than the table says, and
    three networks in a row measured 1-3% over a budget they had aimed under by the
    (smaller) median error.
    """
    recent = [
        it
        for it in history[-5:]
        if it.get("latency_ms_measured") and (it.get("resources") or {}).get("latency")
    ]
    errors = [
        abs(float(it["latency_ms_measured"]) / float(it["resources"]["latency"]) - 1.0)
        for it in recent
    ]
    if not errors:
        return 0.0
    margin = float(np.median(errors))
    last = history[-1]
    if recent[-1] is last:
        # The longer timing that confirms a network under the budget, if it ran, is the
        # later word: it read 0.531 of a reference the short timing put at 0.495.
        ms = float(last.get("latency_ms_confirmed") or last["latency_ms_measured"])
        if ms > float(last["targets"]["latency"]):
            margin = max(margin, abs(ms / float(last["resources"]["latency"]) - 1.0))
    return min(MAX_MARGIN, margin)


def confirm_runs(opts: NetAdaptOptions) -> int:
    """Timed inferences of the longer measurements: the latency that ends a search, and the
    final side-by-side timing of reference, result and baseline."""
    return max(100, 10 * opts.measure_runs)


def result_epochs(
    train_epochs: int, iterations: int, opts: NetAdaptOptions, train_images: int
) -> int:
    """Epochs a fine-tuned NetAdapt result's weights saw, rounded up: the reference's
    training, the short fine-tunings of its chain of chosen proposals, and the long
    fine-tuning (``long_epochs``). The width-multiplier baseline trains this long, and so
    does a ``final="scratch"`` result, unless ``final_epochs`` is given."""
    steps_per_epoch = math.ceil(train_images / opts.batch_size)
    short = iterations * opts.short_steps
    return train_epochs + opts.long_epochs + math.ceil(short / steps_per_epoch)


def fewest_channels_removed(
    model: Any,
    group: Any,
    targets: dict[str, float],
    resources: Sequence[str],
    meter: Meter,
    criterion: str = "l1",
    values: dict[str, float] | None = None,
    multiple: int = 1,
    cache: dict[tuple[str, int], dict[str, float] | None] | None = None,
    planned: Callable[[dict[str, int]], dict[str, float] | None] | None = None,
) -> tuple[int, dict[str, float]] | None:
    """The most channels ``group`` can keep while ``model`` meets every target.

    Kept counts are multiples of the group's divisor and of ``multiple`` (the target's
    channel block), below its current count; the
    channels kept are those with the largest filter norms (``criterion``). The answer was
    evaluated: its resources, as ``meter`` evaluates them (the latency table's prediction,
    not a guess), meet every target.

    Args:
        model: the current network.
        group: a :class:`edgekit.compress.PrunableGroup` of ``model``.
        targets: resource name -> the value to reach.
        resources: the resources to evaluate (every key of ``targets``).
        meter: evaluates them.
        criterion: ``l1`` or ``l2``.
        values: ``model``'s own resources, if known (spares an evaluation).
        multiple: kept counts are multiples of this too.
        cache: (group, kept count) -> resources, shared by the calls of one iteration (a
            halved step asks about the same pruned networks again).
        planned: evaluates a plan's resources without building the pruned network
            (:func:`edgekit.search._resources.plan_evaluator`), where the resources allow.

    Returns:
        ``(kept channels, resources of the pruned network)``, or None when even the fewest
        channels do not reach the targets (or cannot be evaluated).
    """
    from edgekit.compress import prune_channels

    step = math.lcm(group.divisor, int(multiple))
    counts = list(range(step, group.channel_count, step))
    if not counts:
        return None
    if values is None:
        values = resource_values(model, resources, meter)
        if values is None:
            return None

    def evaluate(index: int) -> dict[str, float] | None:
        key = (group.name, counts[index])
        if cache is not None and key in cache:
            return cache[key]
        plan = {group.name: counts[index]}
        if planned is not None:
            found = planned(plan)
        else:
            found = resource_values(prune_channels(model, plan, criterion), resources, meter)
        if cache is not None:
            cache[key] = found
        return found

    found = largest_feasible(len(counts), evaluate, targets, values)
    if found is None:
        return None
    index, kept_values = found
    return counts[index], dict(kept_values)


def sayer(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    return say


def resource_values(model: Any, resources: Sequence[str], meter: Meter) -> dict[str, float] | None:
    """Each resource of ``model``, or None if one cannot be evaluated."""
    out: dict[str, float] = {}
    for name in resources:
        value = get_resource(name).fn(model, meter)
        if value is None:
            return None
        out[name] = float(value)
    return out


def describe(
    model: Any,
    data: Dataset,
    meter: Meter,
    stem: str,
    path: Path,
    say: Progress,
    measured: float | None = None,
) -> dict[str, Any]:
    """Accuracy, cost and latency of one network, measured the same way for every one
    (``measured``: its latency, if it was just measured)."""
    from edgekit.models import count_model
    from edgekit.search._resources import BYTES_PER_WEIGHT
    from edgekit.train import evaluate_probs

    cost = count_model(model)
    test_acc = float(np.mean(np.argmax(evaluate_probs(model, data.x_test), axis=1) == data.y_test))
    predicted = meter.predict_ms(model)
    if meter.can_measure and measured is None:
        say(f"measuring {stem} ({meter.where})")
        measured = meter.measure_ms(model, stem=stem, fresh=True)  # keep its artifact
    artifact = meter.artifacts.get(stem)
    return {
        "latency_ms": round_or_none(measured if measured is not None else predicted),
        "latency_ms_predicted": round_or_none(predicted),
        "latency_ms_measured": round_or_none(measured),
        "accuracy": round(test_acc, 6),
        "val_accuracy": round(val_accuracy(model, data), 6),
        "macs": int(cost.macs),
        "params": int(cost.params),
        "size_bytes": int(cost.params * BYTES_PER_WEIGHT[meter.precision]),
        "model": str(Path(path).absolute()),
        "artifact": str(Path(artifact).absolute()) if artifact and measured is not None else None,
    }


def round_or_none(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in values.items()}


def write_state(out: Path, state: dict[str, Any]) -> None:
    write_json_atomic(out / STATE, state)
