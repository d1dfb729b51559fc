"""NetAdapt's options, the files of its output folder, and the zoo reference it may start from."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from edgekit.data import Dataset
from edgekit.errors import BadInputError
from edgekit.search._resources import Budget, get_resource, parse_budget

STATE = "netadapt_state.json"
REPORT = "netadapt.json"
CHART = "netadapt.png"
STATE_SCHEMA = "edgekit.netadapt-state/1"
STATUSES = ("budget_met", "budget_unreachable", "max_iterations")
# How the result is trained once the search has chosen its architecture.
FINALS = ("fine-tune", "scratch")


@dataclass
class NetAdaptOptions:
    """What a NetAdapt search does.

    Attributes:
        resources: constrained resources, the primary one first (``latency``, ``macs``,
            ``size``).
        budgets: one budget per resource: ``0.5x`` (of the reference) or absolute (``4ms``,
            ``2M``, ``300KB``); see :func:`edgekit.search.parse_budget`.
        proposals: K, the proposals fine-tuned per iteration; None for every prunable group.
        short_steps: fine-tuning batches per proposal.
        long_epochs: fine-tuning epochs of the final network; they count in the epochs of
            the width baseline and of a ``final="scratch"`` result too.
        init_fraction: ΔR_1 as a share of the reference's resource.
        decay: ΔR_{i+1} / ΔR_i.
        max_iterations: stop after this many iterations.
        batch_size: training batch size.
        learning_rate: initial learning rate of the short fine-tuning. With ``bn_batches``,
            3e-4 recovered more in 15 batches than 1e-3 (MobileNet v1 at 176 px, three pruned
            networks: validation accuracy 0.948/0.933/0.959 at 1e-3, 0.985/0.970/0.982 at
            3e-4, 0.985/0.952/0.974 at 1e-4).
        long_learning_rate: initial learning rate of the long fine-tuning (not used by
            ``final="scratch"``, which trains at the baseline's).
        final: how the searched network becomes the result. ``fine-tune`` (the paper's): its
            inherited weights are fine-tuned ``long_epochs`` epochs. ``scratch``: the search
            chooses only the architecture; the result gets fresh (seeded) weights and is
            trained from scratch with the width baseline's recipe, for as many epochs as
            the width baseline (``final_epochs``, or as many as a fine-tuned result's
            weights see: the reference's training, the short fine-tunings and
            ``long_epochs``, see :func:`edgekit.search._loop.result_epochs`), so result and
            baseline differ only in architecture. On cluttered digits (MobileNet v2 at
            128 px, 30-epoch reference) the 0.5x search's architecture trained from
            scratch for 43 epochs read 0.925 and 0.930 (two seeds) against 0.903 for its
            fine-tuned weights (Liu et al., "Rethinking the Value of Network Pruning",
            ICLR 2019, report the same for structured pruning).
        final_epochs: epochs of ``final="scratch"`` (and then of the width baseline); None:
            the reference's training epochs plus the search's short fine-tunings plus
            ``long_epochs``, which needs a zoo reference.
        distill: the long fine-tuning learns from the reference (knowledge distillation,
            :func:`edgekit.compress.distill.distill`: the reference's softened outputs and
            the labels) instead of from the labels alone. The width baseline is then
            distilled from the same reference for all of its epochs, so the comparison
            stays like for like (it favours the baseline, which learns from the reference
            from its first epoch). With ``final="scratch"`` the result too learns from the
            reference for all of its epochs.
        distill_temperature: softmax temperature T of the distillation loss.
        distill_lam: weight of the labels' cross-entropy in the distillation loss.
        criterion: channel importance: ``l1`` (the paper's) or ``l2``.
        bn_batches: training batches each proposal's BatchNormalization statistics are
            re-estimated on after its short fine-tuning (0: never). Pruning
            leaves later layers' statistics describing the unpruned network, so short-term
            accuracy partly measures how stale they are. Off by default: re-estimating ranks
            proposals by what their weights can do (validation accuracy 0.11 -> 0.98 for one
            MobileNet v1 proposal), but on the benchmark's end metric it has not yet shown a
            gain: MobileNet v1 at 176 px, 0.5x, seed 0, test accuracy after the long
            fine-tuning 0.9833 with it (20 batches, learning rate 3e-4; two step schedules)
            against 0.9944 without (benchmarks/RESULTS.md, netadapt and netadapt_bn).
        screen_batches: with ``proposals`` K, which K groups are fine-tuned. 0: the K with
            the largest share of the primary resource (the groups whose pruning saves most
            per channel). N > 0: every group that can make the iteration's step is pruned,
            its BatchNormalization statistics re-estimated on N training batches (no weight
            changes; "adaptive BatchNorm", Li et al., EagleEye, ECCV 2020, which found its
            accuracy to predict the fine-tuned one), scored on the validation split, and the
            K best by :func:`edgekit.search._loop.proposal_rank` are fine-tuned. The paper
            fine-tunes a proposal for every layer; ranking by share alone only ever offers
            the layers that cost most, which at large inputs are those near the input
            (MobileNet v2 at 176 px: the stem and block2/3's expansions were cut first).
        channel_multiple: proposals keep channel counts that are multiples of this (and of
            the group's own unit): runtimes compute channels in vector blocks, so 35
            channels can be slower than 40. None: the target's ``channel_multiple``, else 1.
        seed: fixes every random choice.
        measure: measure latency where the target can be measured here (the reference, each
            chosen network when latency is a resource, the result, the baseline).
        measure_runs: timed inferences per measurement; the latency that ends the search and
            the final side-by-side timing take 10 times as many (at least 100).
        baseline: also train and measure the width-multiplier baseline (needs a zoo model).
        baseline_widths: width multipliers of the baseline, relative to the reference's width.
    """

    resources: tuple[str, ...] = ("latency",)
    budgets: tuple[str, ...] = ("0.5x",)
    proposals: int | None = None
    short_steps: int = 100
    long_epochs: int = 5
    init_fraction: float = 0.1
    decay: float = 0.9
    max_iterations: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    long_learning_rate: float = 1e-3
    final: str = "fine-tune"
    final_epochs: int | None = None
    distill: bool = False
    distill_temperature: float = 4.0
    distill_lam: float = 0.5
    criterion: str = "l1"
    bn_batches: int = 0
    screen_batches: int = 0
    channel_multiple: int | None = None
    seed: int = 0
    measure: bool = True
    measure_runs: int = 50
    baseline: bool = False
    baseline_widths: tuple[float, ...] = (1.0, 0.75, 0.5, 0.35)

    def check(self) -> list[Budget]:
        """Validate every option and parse the budgets.

        Raises:
            BadInputError: the first bad option, with the value received and what is allowed.
        """
        from edgekit.compress import CRITERIA

        self.resources = tuple(self.resources)
        self.budgets = tuple(str(b) for b in self.budgets)
        self.baseline_widths = tuple(float(w) for w in self.baseline_widths)
        if not self.resources:
            raise BadInputError("no --resource given; pass latency, macs or size")
        for name in self.resources:
            get_resource(name)
        if len(set(self.resources)) != len(self.resources):
            raise BadInputError(f"--resource names a resource twice: {', '.join(self.resources)}")
        if len(self.budgets) != len(self.resources):
            raise BadInputError(
                f"{len(self.resources)} resource(s) ({', '.join(self.resources)}) but "
                f"{len(self.budgets)} budget(s) ({', '.join(self.budgets) or 'none'}); give one "
                "--budget per --resource, in the same order"
            )

        def need(ok: bool, option: str, value: Any, allowed: str) -> None:
            if not ok:
                raise BadInputError(f"{option} must be {allowed}; got {value!r}")

        need(
            self.proposals is None or (_is_int(self.proposals) and self.proposals >= 1),
            "--proposals",
            self.proposals,
            "an integer >= 1",
        )
        need(_is_int(self.short_steps) and self.short_steps >= 0, "--short-steps", self.short_steps, "an integer >= 0")  # fmt: skip
        need(_is_int(self.long_epochs) and self.long_epochs >= 0, "--long-epochs", self.long_epochs, "an integer >= 0")  # fmt: skip
        need(_is_num(self.init_fraction) and 0 < self.init_fraction <= 1, "--init-fraction", self.init_fraction, "a number in (0, 1]")  # fmt: skip
        need(_is_num(self.decay) and 0 < self.decay <= 1, "--decay", self.decay, "a number in (0, 1]")  # fmt: skip
        need(_is_int(self.max_iterations) and self.max_iterations >= 1, "--max-iterations", self.max_iterations, "an integer >= 1")  # fmt: skip
        need(_is_int(self.bn_batches) and self.bn_batches >= 0, "--bn-batches", self.bn_batches, "an integer >= 0")  # fmt: skip
        need(_is_int(self.screen_batches) and self.screen_batches >= 0, "--screen-batches", self.screen_batches, "an integer >= 0")  # fmt: skip
        if self.screen_batches and self.proposals is None:
            raise BadInputError(
                f"--screen-batches {self.screen_batches} chooses which K groups are fine-tuned, "
                "but without --proposals K every group is; give --proposals K or drop "
                "--screen-batches"
            )
        need(_is_int(self.batch_size) and self.batch_size >= 1, "--batch-size", self.batch_size, "an integer >= 1")  # fmt: skip
        for name, option in (("learning_rate", "--learning-rate"), ("long_learning_rate", "--long-learning-rate")):  # fmt: skip
            value = getattr(self, name)
            need(_is_num(value) and value > 0, option, value, "a number > 0")
        need(isinstance(self.distill, bool), "--distill", self.distill, "true or false")
        need(_is_num(self.distill_temperature) and self.distill_temperature > 0, "--distill-temperature", self.distill_temperature, "a number > 0")  # fmt: skip
        need(_is_num(self.distill_lam) and self.distill_lam >= 0, "--distill-lam", self.distill_lam, "a number >= 0")  # fmt: skip
        need(self.final in FINALS, "--final", self.final, f"one of {', '.join(FINALS)}")
        need(
            self.final_epochs is None or (_is_int(self.final_epochs) and self.final_epochs >= 1),
            "--final-epochs",
            self.final_epochs,
            "an integer >= 1",
        )
        if self.final_epochs is not None and self.final != "scratch":
            raise BadInputError(
                f"--final-epochs sets how long --final scratch trains the result; got "
                f"--final-epochs {self.final_epochs} with --final {self.final}: add --final "
                "scratch or drop --final-epochs (--long-epochs sets the fine-tuning)"
            )
        if self.distill and self.final == "fine-tune" and self.long_epochs == 0:
            raise BadInputError(
                "--distill teaches the long fine-tuning from the reference, but --long-epochs "
                "is 0; give --long-epochs 1 or more, or drop --distill"
            )
        need(self.criterion in CRITERIA, "criterion", self.criterion, f"one of {', '.join(CRITERIA)}")  # fmt: skip
        need(
            self.channel_multiple is None
            or (_is_int(self.channel_multiple) and self.channel_multiple >= 1),
            "--channel-multiple",
            self.channel_multiple,
            "an integer >= 1",
        )
        need(_is_int(self.seed), "--seed", self.seed, "an integer")
        need(_is_int(self.measure_runs) and self.measure_runs >= 1, "--runs", self.measure_runs, "an integer >= 1")  # fmt: skip
        need(
            bool(self.baseline_widths) and all(0 < w <= 4 for w in self.baseline_widths),
            "--baseline-widths",
            self.baseline_widths,
            "width multipliers in (0, 4]",
        )
        return [parse_budget(b, r) for r, b in zip(self.resources, self.budgets, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetAdaptOptions:
        """Inverse of :meth:`as_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**values)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class ZooSpec:
    """Where the reference came from when it is a zoo model (what the baseline rebuilds).

    Attributes:
        name: registered zoo name (``mobilenet_v2``).
        width: the reference's width multiplier.
        input_size: square input side.
        train_epochs: epochs the reference was trained for.
    """

    name: str
    width: float = 1.0
    input_size: int = 32
    train_epochs: int = 10


def train_zoo_model(
    zoo: ZooSpec,
    data: Dataset,
    seed: int = 0,
    batch_size: int = 32,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Build the zoo model ``zoo`` for ``data`` and train it ``zoo.train_epochs`` epochs.

    The same recipe trains the width-multiplier baseline, so that both start alike.
    """
    from edgekit.models import create
    from edgekit.train import TrainConfig, set_seed, train_model

    set_seed(seed)  # the initial weights too
    model = create(
        zoo.name, input_shape=data.input_shape, classes=data.num_classes, width=zoo.width
    )
    if zoo.train_epochs > 0:
        cfg = TrainConfig(epochs=zoo.train_epochs, batch_size=batch_size, seed=seed)
        train_model(model, data, cfg, callbacks=list(callbacks))
    return model


Progress = Callable[[str], None]
IterationHook = Callable[[dict[str, Any]], None]
