"""Resources a network search constrains, the budgets on them, and how each is evaluated.

A resource is a registered function ``fn(model, meter) -> float | None`` with a unit and a
parser for absolute budgets:

- ``latency`` (ms): predicted from the target's latency look-up table (see
  :mod:`edgekit.measure.lut`); without a table, measured: the model is converted to LiteRT
  (``tflite_int8``, or the profile's precision) and timed on this machine, which is only the
  target's own hardware for the ``cpu`` target. ``None`` when a layer is outside the table.
- ``macs``: multiply-accumulates of one inference (:func:`edgekit.compress.count_macs`).
- ``size`` (bytes): the weights at the deployment precision: parameters x 1 byte (int8) or
  x 4 bytes (fp32). Batch-norm parameters are counted although the converter folds them
  into the convolutions, so this slightly over-counts the artifact's weights; it is exact,
  monotone in the channel counts, and needs no conversion.

A budget is relative (``0.5x``: half the reference's resource) or absolute (``4ms``,
``2M`` MACs, ``300KB``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BadInputError, DuplicateRegistrationError, UnknownNameError

log = logging.getLogger(__name__)

# Targets whose hardware is this machine's CPU, where LiteRT timings are the target's own.
LOCAL_TARGETS = ("cpu",)
BYTES_PER_WEIGHT = {"int8": 1, "fp32": 4}
# How far (a fraction) a chosen network's first timing may be off the rescaled table's
# figure before it is timed again (Meter.measure_checked). The table and the timings agree
# within 1-8% on MobileNet v1 and v2 at 176 px here; the one outlier seen was 60% off.
RETIME_TOLERANCE = 0.15


@dataclass(frozen=True)
class Resource:
    """A registered resource.

    Attributes:
        name: ``latency``, ``macs`` or ``size``.
        unit: what its values count (``ms``, ``MACs``, ``bytes``).
        key: its key in reports (``latency_ms``, ``macs``, ``size_bytes``).
        fn: ``fn(model, meter) -> value``, or None when the model cannot be evaluated.
        parse: absolute budget text -> value in ``unit``.
        examples: budget strings for error messages.
        shares: ``shares(model, meter) -> {layer name: value}``, the per-layer split used to
            rank channel groups (the layers a group touches and what they cost).
    """

    name: str
    unit: str
    key: str
    fn: Callable[[Any, Meter], float | None]
    parse: Callable[[str], float]
    examples: str
    shares: Callable[[Any, Meter], dict[str, float]]

    def format(self, value: float | None) -> str:
        """A value with its unit, for messages."""
        if value is None:
            return "n/a"
        if self.name == "latency":
            return f"{value:.3f} ms"
        if self.name == "macs":
            return f"{value / 1e6:.3f}M MACs"
        return f"{value / 1e3:.1f} KB"


_RESOURCES: dict[str, Resource] = {}


def register_resource(resource: Resource) -> Resource:
    """Register a resource by name.

    Raises:
        DuplicateRegistrationError: the name is already registered.
    """
    if resource.name in _RESOURCES:
        raise DuplicateRegistrationError(f"resource '{resource.name}' is already registered")
    _RESOURCES[resource.name] = resource
    return resource


def get_resource(name: str) -> Resource:
    """The resource ``name``.

    Raises:
        UnknownNameError: no such resource; the message lists the known ones.
    """
    if name not in _RESOURCES:
        raise UnknownNameError(
            f"unknown resource '{name}'; known resources: {', '.join(list_resources())}"
        )
    return _RESOURCES[name]


def list_resources() -> list[str]:
    """Names of the registered resources."""
    return sorted(_RESOURCES)


# --------------------------------------------------------------------------- the meter


@dataclass
class Meter:
    """Everything resource functions need: the latency table, and how to measure.

    Attributes:
        profile: a loaded latency look-up table, or None.
        precision: ``int8`` or ``fp32``: the artifact measured and the bytes per weight.
        target: the target name, or None.
        threads: LiteRT threads when measuring.
        can_measure: latency can be measured for this target: here (``cpu``), or on
            ``device``.
        work_dir: where measured artifacts are written.
        calibration: images for int8 conversion.
        runs, warmup: timed and untimed inferences per measurement.
        device: a remote device URI (``ssh://``, ``adb://``, ``agent://``) measurements run
            on, or None for this machine.
        measure_fn: measures elsewhere: ``fn(artifact, sample, runs, warmup, threads)`` ->
            latency statistics (a Ray task on the node holding the device).
        scale: measured / predicted latency of the last network measured; the search's
            latency of a network is its table prediction times this (see
            :meth:`latency_ms`), so a table's systematic error is corrected by measurement.
        alternatives: further tables (the target's ``more_profiles``, other input sizes),
            tried in order when ``profile`` does not cover the network.
        anchor: the reference's artifact and its first measured p50. Once set, a network
            measured here is timed side by side with the reference (alternating rounds) and
            its latency is the anchor's p50 times their ratio: a burst of load on the machine
            (a fine-tuning worker still winding down) hits both alike instead of inflating
            one network's figure and steering the search.
        notes: what the meter decided and why (a table that does not cover the network).
        artifacts: measured artifact path by stem.
    """

    profile: dict[str, Any] | None = None
    precision: str = "int8"
    target: str | None = None
    threads: int | None = None
    can_measure: bool = False
    work_dir: Path | None = None
    calibration: np.ndarray | None = None
    runs: int = 50
    warmup: int = 10
    device: str | None = None
    measure_fn: Callable[..., dict[str, Any]] | None = None
    scale: float = 1.0
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    anchor: tuple[Path, float] | None = None
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    _measured: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def format(self) -> str:
        """The converter format measured: ``tflite_int8`` or ``tflite_fp32``."""
        return f"tflite_{self.precision}"

    def latency_ms(self, model: Any, ops: Any = None) -> float | None:
        """The latency the search uses: the table's prediction times :attr:`scale`, or a
        measurement without a table; None outside the table. ``ops``: see
        :meth:`predict_ms`."""
        if self.profile is not None:
            raw = self.predict_ms(model, ops)
            return None if raw is None else raw * self.scale
        return self.measure_ms(model, stem="search")

    def check_profile(self, model: Any) -> None:
        """Choose the table: the first of :attr:`profile` and :attr:`alternatives` that
        covers ``model`` and, when latency is measured on this machine, was recorded with
        this CPU's kernel-selecting features (else the first that covers it, with a note);
        if none covers it, measure instead (with a note).

        Raises:
            BadInputError: no table covers ``model`` and latency cannot be measured.
        """
        if self.profile is None:
            return
        from edgekit.measure.lut import (
            MissingLayerError,
            int8_kind,
            kernel_flags_difference,
            predict_latency,
        )

        # The network runs on this machine's CPU: measured here, or a cpu target predicted
        # without measuring (--no-measure).
        here = not self.remote and (self.can_measure or self.target in LOCAL_TARGETS)
        covering = []
        for table in [self.profile, *self.alternatives]:
            try:
                predict_latency(model, table)
            except MissingLayerError:
                continue
            covering.append(table)
        same_cpu = [t for t in covering if here and kernel_flags_difference(t) == ([], [])]
        # Next best: a table of the same int8 kind: an AVX-512 CPU without VNNI is closer
        # to an AVX2 table than to a VNNI one, since neither has an int8 dot product.
        kind = int8_kind() if here else None
        same_kind = [
            t
            for t in covering
            if kind and int8_kind((t.get("device") or {}).get("flags") or []) == kind
        ]
        chosen = (same_cpu or same_kind or covering or [self.profile])[0]
        if chosen is not self.profile:
            self.notes.append(
                f"the target's table '{chosen.get('name', '?')}' covers this network"
                + (
                    " and was recorded with this CPU's features"
                    if same_cpu
                    else " and was recorded on a CPU "
                    + ("with" if kind and kind[1] else "without")
                    + " an int8 dot product, like this one"
                    if same_kind
                    else ""
                )
                + f"; the first, '{self.profile.get('name', '?')}', "
                + (
                    "was recorded on other ones"
                    if any(t is self.profile for t in covering)
                    else "does not"
                )
            )
            self.profile = chosen
        differ = kernel_flags_difference(self.profile) if here and covering else None
        recorded = str(self.profile.get("device", {}).get("cpu") or "")
        if differ and (differ[0] or differ[1]):
            lacks, adds = differ
            self.notes.append(
                f"the latency table '{self.profile.get('name', '?')}' was recorded on a CPU "
                + (f"with {', '.join(lacks)}, which this one lacks" if lacks else "")
                + (" and " if lacks and adds else "")
                + (f"without {', '.join(adds)}, which this one has" if adds else "")
                + ": its predictions are rescaled to this machine's measurements, but its "
                "layers' relative costs may not hold here; `edgekit lut build` records a "
                "table on this machine"
            )
        elif recorded and here and covering:
            from edgekit.measure._bench import host_description

            this_cpu = str(host_description()["cpu"])
            if recorded != this_cpu:
                self.notes.append(
                    f"the latency table was recorded on '{recorded}', this machine is "
                    f"'{this_cpu}': its predictions are rescaled to this machine's measurements"
                )
        try:
            predict_latency(model, self.profile)
        except MissingLayerError as err:
            if not self.can_measure:
                raise MissingLayerError(
                    f"{err}; and latency cannot be measured instead (measuring is turned off, "
                    "or the target is not this machine: pass --device URI)"
                ) from None
            self.notes.append(
                f"the latency table does not cover this network ({err}); latency is measured "
                f"instead ({self.where})"
            )
            self.profile = None

    def calibrate(self, predicted: float, measured: float) -> None:
        """Scale later predictions by ``measured / predicted`` (one network's)."""
        if predicted > 0 and measured > 0:
            self.scale = measured / predicted

    @property
    def where(self) -> str:
        """Where measurements run, for messages."""
        threads = f"{self.threads} thread(s)" if self.threads else "default threads"
        on = getattr(self.measure_fn, "where", None) or self.device or "this machine"
        return f"{self.format} on {on}, LiteRT, {threads}"

    def predict_ms(self, model: Any, ops: Any = None) -> float | None:
        """Latency predicted from the profile; None without one or outside the table.
        ``ops``: the model's ops if known (a pruned copy's, see
        :func:`edgekit.measure.lut.rechannel_ops`)."""
        if self.profile is None:
            return None
        from edgekit.measure.lut import MissingLayerError, predict_latency

        try:
            return float(predict_latency(model, self.profile, ops=ops).latency_ms)
        except MissingLayerError as err:
            log.debug("no prediction for %s: %s", model.name, err)
            return None

    def measure_ms(
        self, model: Any, stem: str = "measured", fresh: bool = False, runs: int | None = None
    ) -> float:
        """p50 latency of ``model`` converted to :attr:`format` and timed in LiteRT here.

        The artifact is kept as ``<work_dir>/<stem>_<precision>.tflite``. Architectures
        already measured by this meter are not measured again unless ``fresh`` is set.
        ``runs``: timed inferences (default :attr:`runs`).

        Raises:
            BadInputError: this meter cannot measure (no local runtime for the target).
        """
        if not self.can_measure:
            raise BadInputError(
                f"latency of target '{self.target}' cannot be measured on this machine; "
                "pass --device URI"
            )
        signature = architecture_signature(model)
        if signature in self._measured and not fresh:
            return self._measured[signature]
        if self.work_dir is None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="edgekit-measure-") as tmp:
                return self._measure(model, stem, Path(tmp), signature, runs or self.runs)
        return self._measure(model, stem, self.work_dir, signature, runs or self.runs)

    def measure_checked(
        self,
        model: Any,
        stem: str,
        expected: float | None,
        tolerance: float = RETIME_TOLERANCE,
        retimes: int = 2,
    ) -> tuple[float, list[float]]:
        """``model``'s latency (:meth:`measure_ms`); if it is more than ``tolerance`` (a
        fraction) off ``expected``, its artifact is timed ``retimes`` times more and the
        median of all the timings is its latency.

        One timing can be far off: in a MobileNet v2 search, a network the rescaled table put
        at 1.002 ms timed at 1.604 ms side by side with the reference, and 0.98 ms in the next
        iteration's pruning of it. Taken as it was, it rescaled the table by 1.6 and steered
        the next iteration. A disagreement the timings repeat (a table recorded on another
        machine) stands, at the cost of the extra timings.

        An architecture this meter measured before is not timed again: its remembered
        latency is returned as the one timing. Without :attr:`work_dir` the artifact is gone
        after the first timing, and that timing stands.

        Returns:
            The latency, and every timing taken (just one when the first agreed).
        """
        cached = architecture_signature(model) in self._measured
        first = self.measure_ms(model, stem=stem)
        agrees = expected is None or expected <= 0 or abs(first / expected - 1) <= tolerance
        if cached or agrees or self.work_dir is None:
            return first, [first]
        timings = [first]
        for _ in range(retimes):
            again = self.retime(model, stem)
            if again is not None:
                timings.append(again)
        latency = float(np.median(timings))
        self._measured[architecture_signature(model)] = latency
        return latency, timings

    def retime(self, model: Any, stem: str, runs: int | None = None) -> float | None:
        """Time again the artifact of ``model`` that :meth:`measure_ms` kept as ``stem``
        (``runs`` inferences, default :attr:`runs`), without converting it again; None when
        it was not kept (no :attr:`work_dir`)."""
        path = self.artifacts.get(stem)
        if self.work_dir is None or path is None or not Path(path).exists():
            return None
        return self._time(Path(path), self._calibration_images(model)[:1], runs or self.runs)

    def _calibration_images(self, model: Any) -> np.ndarray:
        # Calibration sets the int8 ranges, which do not change the latency: a few images do.
        if self.calibration is not None:
            return self.calibration[:32]
        rng = np.random.default_rng(0)  # int8 conversion needs images: noise stands in
        return rng.random((8, *model.inputs[0].shape[1:]), dtype=np.float32)

    def _measure(self, model: Any, stem: str, work_dir: Path, signature: str, runs: int) -> float:
        from edgekit.converters import ConvertOptions, get_converter

        work_dir.mkdir(parents=True, exist_ok=True)
        calibration = self._calibration_images(model)
        artifact = get_converter(self.format).convert(
            model, work_dir, ConvertOptions(stem=stem, calibration=calibration)
        )
        self.artifacts[stem] = artifact.path
        p50 = self._time(artifact.path, calibration[:1], runs)
        self._measured[signature] = p50
        return p50

    def _time(self, path: Path, sample: np.ndarray, runs: int) -> float:
        """p50 of one artifact: relative to the anchor here, if there is one."""
        if self.anchor is not None and not self.remote:
            return self._relative_to_anchor(path, sample, runs)
        return float(self.measure_artifact(path, sample, runs)["p50"])

    @property
    def remote(self) -> bool:
        """Measurements run elsewhere (a Ray node or a device), not in this process."""
        return self.measure_fn is not None or bool(self.device)

    def measure_artifact(self, path: Path, sample: np.ndarray, runs: int) -> dict[str, float]:
        """Latency statistics (``p50``, ``p90``, ... in ms) of one int8/fp32 ``.tflite``
        artifact, measured where this meter measures: through :attr:`measure_fn` (the Ray
        node holding the device), on :attr:`device`, or here in LiteRT."""
        if self.measure_fn is not None:
            stats = self.measure_fn(path, sample, runs, self.warmup, self.threads)
        elif self.device:
            from edgekit.measure.remote import bench_on_device

            stats = bench_on_device(self.device, path, runs, self.warmup, self.threads)[
                "latency_ms"
            ]
        else:
            from edgekit.measure import measure_latency, open_runner

            runner = open_runner("litert", path, threads=self.threads)
            stats = asdict(measure_latency(runner, sample, runs=runs, warmup=self.warmup))
        return {k: round(float(v), 6) for k, v in stats.items() if isinstance(v, int | float)}

    def _relative_to_anchor(self, path: Path, sample: np.ndarray, runs: int) -> float:
        assert self.anchor is not None
        anchor_path, anchor_ms = self.anchor
        stats = measure_artifacts({"anchor": anchor_path, "new": path}, self, max(runs, 20), sample)
        return float(anchor_ms * stats["new"]["p50"] / stats["anchor"]["p50"])


def measure_artifacts(
    paths: dict[str, Path], meter: Meter, runs: int, sample: np.ndarray
) -> dict[str, dict[str, float]]:
    """Latency statistics of each artifact: side by side in alternating rounds here, or one
    after another where the meter measures remotely."""
    if meter.remote:
        return {key: meter.measure_artifact(path, sample, runs) for key, path in paths.items()}
    from edgekit.measure import measure_side_by_side, open_runner

    runners = {k: open_runner("litert", p, threads=meter.threads) for k, p in paths.items()}
    stats = measure_side_by_side(runners, sample, runs=runs, warmup=meter.warmup, rounds=5)
    return {k: {n: round(float(v), 6) for n, v in asdict(s).items()} for k, s in stats.items()}


def plan_evaluator(
    model: Any, resources: Sequence[str], meter: Meter, criterion: str = "l1"
) -> Callable[[dict[str, int]], dict[str, float] | None] | None:
    """Evaluates the resources of ``model``'s channel-pruned copies without building them,
    or None when a resource needs the built network.

    Pruning changes the channels of each layer and nothing else, so a plan's planned channel
    counts (:class:`edgekit.compress.PlannedChannels`) are enough: latency predicted from a
    table is read with them (:func:`edgekit.measure.lut.rechannel_ops`), and MACs and size
    are recomputed per layer (:class:`edgekit.models.RechanneledCost`). The values are the
    ones the resources give for the built network (tests hold them equal); a Keras rebuild
    per plan costs about half a second on a tiny network and a second at MobileNet scale. A
    plan that changes a layer RechanneledCost does not model is built and counted.

    Returns:
        ``fn(plan) -> {resource: value}``, None where the table has no estimate; or None.
    """
    if any(r not in ("latency", "macs", "size") for r in resources):
        return None
    if "latency" in resources and meter.profile is None:
        return None
    from edgekit.compress import PlannedChannels, prune_channels
    from edgekit.models import RechanneledCost, count_model

    planned = PlannedChannels(model, criterion)
    counted = RechanneledCost(model) if {"macs", "size"} & set(resources) else None
    if counted is not None and not counted.usable:
        return None
    ops = None
    if "latency" in resources:
        from edgekit.measure.lut import model_ops

        ops = model_ops(model, meter.precision)

    def evaluate(plan: dict[str, int]) -> dict[str, float] | None:
        channels = planned.layer_channels(plan)
        out: dict[str, float] = {}
        if ops is not None:
            from edgekit.measure.lut import rechannel_ops

            value = meter.latency_ms(model, rechannel_ops(ops, channels))
            if value is None:
                return None
            out["latency"] = float(value)
        if counted is not None:
            cost = counted.cost(channels)
            if cost is None:  # a layer not modelled: count the built network
                built = count_model(prune_channels(model, plan, criterion))
                cost = (int(built.macs), int(built.params))
            if "macs" in resources:
                out["macs"] = float(cost[0])
            if "size" in resources:
                out["size"] = float(cost[1] * BYTES_PER_WEIGHT[meter.precision])
        return {r: out[r] for r in resources}

    return evaluate


def architecture_signature(model: Any) -> str:
    """A string equal for two models with the same layers and shapes (not weights)."""
    return json.dumps([[layer.name, str(layer.output_shape)] for layer in model.layers])


def make_meter(
    resources: list[str],
    target: str | None,
    profile: str | Path | dict[str, Any] | None,
    measure: bool,
    work_dir: Path | None,
    calibration: np.ndarray | None,
    runs: int = 50,
    device: str | None = None,
    target_profile: bool = True,
    measure_fn: Callable[..., dict[str, Any]] | None = None,
) -> Meter:
    """Decide how latency is obtained for ``target`` and check that it can be.

    The profile is ``profile`` if given, else (when ``target_profile``) the target file's
    ``profile`` key. Latency is measured (to confirm the chosen networks, or as the resource
    itself when there is no profile) on ``device`` when given, else only where the target's
    hardware is this machine (``cpu``) and LiteRT is here.

    Raises:
        BadInputError: latency is a resource but there is neither a profile nor a way to
            measure it; the profile cannot be loaded.
        UnknownNameError: unknown target.
    """
    from edgekit.measure import runtime_unavailable_reason
    from edgekit.measure.lut import load_profile

    spec = None
    if target is not None:
        from edgekit.targets import load_target

        spec = load_target(target)
    source = profile
    if source is None and target_profile and spec is not None:
        source = spec.profile
    loaded = None
    alternatives = []
    if isinstance(source, dict):
        loaded = source
    elif source is not None:
        loaded = load_profile(source)
    if profile is None and loaded is not None and spec is not None:
        alternatives = [load_profile(name) for name in spec.more_profiles]
        alternatives = [p for p in alternatives if p["precision"] == loaded["precision"]]
    precision = str(loaded["precision"]) if loaded else "int8"
    threads = None
    if loaded:
        threads = loaded.get("device", {}).get("threads")
    if threads is None and spec is not None:
        threads = spec.threads
    runs_tflite = spec is not None and f"tflite_{precision}" in spec.formats
    if measure and (device or measure_fn is not None) and spec is not None and not runs_tflite:
        # A device times what it is sent; the search sends LiteRT .tflite, which is not what
        # this target runs: its figure would not be the target's latency.
        raise BadInputError(
            f"--device: the search times each network as LiteRT tflite_{precision} on the "
            f"device, but target '{target}' runs {', '.join(spec.formats)}; pass a latency "
            "table built for it with --profile NAME|PATH and --no-measure, or use "
            "--resource macs or --resource size"
        )
    local = target in LOCAL_TARGETS and runs_tflite
    here = local and runtime_unavailable_reason("litert") is None
    can_measure = bool(measure and (device or measure_fn is not None or here))
    if "latency" in resources and loaded is None and not can_measure:
        if target is None:
            why = "no target was given"
        elif not measure:
            why = f"target '{target}' has no latency profile and measuring is turned off"
        else:
            why = (
                f"target '{target}' has no latency profile and its latency cannot be measured "
                "on this machine"
            )
        raise BadInputError(
            f"--resource latency needs a latency look-up table or a device to measure on: "
            f"{why}; pass --profile NAME|PATH (build one with `edgekit lut build`), "
            "--device URI to measure on a device, or use --resource macs or --resource size"
        )
    return Meter(
        profile=loaded,
        precision=precision,
        target=target,
        threads=int(threads) if threads is not None else None,
        can_measure=can_measure,
        work_dir=work_dir,
        calibration=calibration,
        runs=runs,
        device=device,
        measure_fn=measure_fn,
        alternatives=alternatives,
    )


# --------------------------------------------------------------------------- the resources


def _latency(model: Any, meter: Meter) -> float | None:
    return meter.latency_ms(model)


def _latency_shares(model: Any, meter: Meter) -> dict[str, float]:
    if meter.profile is None:  # measuring per layer is not possible: MACs stand in
        return _macs_shares(model, meter)
    from edgekit.measure.lut import predict_latency

    pred = predict_latency(model, meter.profile, strict=False)
    return {e.name: e.ms for e in pred.per_layer}


def _macs(model: Any, meter: Meter) -> float:
    from edgekit.compress import count_macs

    return float(count_macs(model))


def _macs_shares(model: Any, meter: Meter) -> dict[str, float]:
    from edgekit.models import count_layers

    return {c.name: float(c.macs) for c in count_layers(model)}


def _size(model: Any, meter: Meter) -> float:
    from edgekit.models import count_model

    return float(count_model(model).params * BYTES_PER_WEIGHT[meter.precision])


def _size_shares(model: Any, meter: Meter) -> dict[str, float]:
    from edgekit.models import count_layers

    per = BYTES_PER_WEIGHT[meter.precision]
    return {c.name: float(c.params * per) for c in count_layers(model)}


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"


def _parse_units(text: str, units: dict[str, float], what: str, examples: str) -> float:
    m = re.fullmatch(rf"\s*({_NUMBER})\s*([a-zA-Z]*)\s*", text)
    unit = m.group(3) if m else ""
    key = next((u for u in units if u.lower() == unit.lower()), None) if m else None
    if m is None or key is None:
        raise BadInputError(
            f"cannot read {what} budget {text!r}; write a share of the reference such as "
            f"0.5x, or an absolute value such as {examples}"
        )
    return float(m.group(1)) * units[key]


def _parse_latency(text: str) -> float:
    units = {"": 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3}
    return _parse_units(text, units, "latency", "4ms or 800us")


def _parse_macs(text: str) -> float:
    units = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
    return _parse_units(text, units, "MACs", "2M or 2000000")


def _parse_size(text: str) -> float:
    units = {"": 1.0, "B": 1.0, "KB": 1e3, "MB": 1e6, "KiB": 1024.0, "MiB": 1024.0**2}
    return _parse_units(text, units, "size", "300KB or 1.2MB")


register_resource(
    Resource("latency", "ms", "latency_ms", _latency, _parse_latency, "4ms", _latency_shares)
)
register_resource(Resource("macs", "MACs", "macs", _macs, _parse_macs, "2M", _macs_shares))
register_resource(
    Resource("size", "bytes", "size_bytes", _size, _parse_size, "300KB", _size_shares)
)


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """A budget on one resource: a share of the reference's value, or an absolute value.

    Attributes:
        resource: the resource's name.
        text: the budget as written.
        relative: the share of the reference (``0.5`` for ``0.5x``), or None.
        absolute: the value in the resource's unit, or None.
    """

    resource: str
    text: str
    relative: float | None = None
    absolute: float | None = None

    def value(self, reference: float) -> float:
        """The budget in the resource's unit, given the reference's value."""
        if self.relative is not None:
            return self.relative * reference
        assert self.absolute is not None
        return self.absolute

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "resource": self.resource,
            "text": self.text,
            "relative": self.relative,
            "absolute": self.absolute,
        }


def parse_budget(text: str, resource: str = "latency") -> Budget:
    """Read a budget: ``0.5x`` (relative to the reference) or an absolute value with a unit.

    Latency: ``4ms``, ``800us``, ``4`` (ms). MACs: ``2M``, ``1.5G``, ``300K``, ``2000000``.
    Size: ``300KB``, ``1.2MB``, ``512KiB``, ``2000000`` (bytes). Units are not
    case-sensitive.

    Raises:
        BadInputError: an unknown resource, unreadable text, or a value that is not > 0 (a
            relative budget must be in (0, 1]).
        UnknownNameError: unknown resource.
    """
    res = get_resource(resource)
    raw = str(text).strip()
    m = re.fullmatch(rf"({_NUMBER})\s*[xX]", raw)
    if m:
        share = float(m.group(1))
        if not 0 < share <= 1:
            raise BadInputError(
                f"{resource} budget {text!r} is not a share in (0, 1] of the reference; a "
                "search only shrinks the network (write e.g. 0.5x)"
            )
        return Budget(resource, raw, relative=share)
    value = res.parse(raw)
    if not value > 0:
        raise BadInputError(f"{resource} budget {text!r} must be > 0")
    return Budget(resource, raw, absolute=value)
