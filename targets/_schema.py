"""Target files: TOML, validated against one schema."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edgekit.errors import BadInputError, UnknownNameError

# key -> (python type, required, description)
SCHEMA: dict[str, tuple[type, bool, str]] = {
    "name": (str, True, "target name, equal to the file stem"),
    "description": (str, True, "one line for `edgekit targets`"),
    "formats": (list, True, "artifact formats to build, each a registered converter format"),
    "int_io": (str, False, "I/O type of full-integer models: int8 or uint8"),
    "threads": (int, False, "CPU threads the runtime uses when measuring"),
    "profile": (str, False, "latency look-up table in edgekit.profiles"),
    "more_profiles": (
        list,
        False,
        "further look-up tables (other input sizes); a search takes the first of profile and "
        "these that covers its network",
    ),
    "channel_multiple": (
        int,
        False,
        "channel counts the runtime computes efficiently are multiples of this; NetAdapt "
        "keeps pruned counts to it",
    ),
    "optional_formats": (
        list,
        False,
        "formats built only where their toolchain is installed; otherwise reported as skipped",
    ),
    "analysis": (str, False, "a registered analysis run on one artifact (e.g. edgetpu)"),
    "analysis_format": (str, False, "the format the analysis reads"),
    "runtime": (
        dict,
        False,
        "per runtime: device (what to run on) and fallback_device (where to validate when the "
        'device is absent here), e.g. [runtime.openvino] device = "MYRIAD"',
    ),
}
RUNTIME_KEYS = ("device", "fallback_device")

# Analyses a target file may name: name -> function(path) returning an object with as_dict().
ANALYSES: dict[str, str] = {"edgetpu": "edgekit.targets._edgetpu:analyze_edgetpu"}
INT_IO_CHOICES = ("int8", "uint8")


@dataclass(frozen=True)
class Target:
    """A validated target description."""

    name: str
    description: str
    formats: tuple[str, ...]
    int_io: str = "int8"
    threads: int | None = None
    profile: str | None = None
    more_profiles: tuple[str, ...] = ()
    channel_multiple: int = 1
    optional_formats: tuple[str, ...] = ()
    analysis: str | None = None
    analysis_format: str | None = None
    runtime: dict[str, dict[str, str]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _target_files() -> dict[str, Any]:
    root = resources.files("edgekit.targets")
    return {
        f.name[: -len(".toml")]: f
        for f in root.iterdir()
        if f.name.endswith(".toml") and not f.name.startswith("_")
    }


def target_names() -> list[str]:
    """Names of every target file shipped in edgekit.targets."""
    return sorted(_target_files())


def validate_target(data: dict[str, Any], source: str) -> Target:
    """Check a parsed target file against the schema.

    Raises:
        BadInputError: a key is unknown, missing, of the wrong type, or a format is not
            registered; the message names the file and the key.
    """
    from edgekit.converters import get_converter

    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise BadInputError(
            f"target file {source}: unknown key '{unknown[0]}'; allowed keys: {', '.join(SCHEMA)}"
        )
    for key, (typ, required, _) in SCHEMA.items():
        if key not in data:
            if required:
                raise BadInputError(f"target file {source}: missing required key '{key}'")
            continue
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise BadInputError(
                f"target file {source}: key '{key}' must be {typ.__name__}, "
                f"got {type(data[key]).__name__}"
            )
    formats = data["formats"]
    if not formats or not all(isinstance(f, str) for f in formats):
        raise BadInputError(f"target file {source}: 'formats' must be a non-empty list of names")
    for fmt in formats:
        get_converter(fmt)  # raises UnknownNameError listing the known formats
    optional = data.get("optional_formats", [])
    if not all(isinstance(f, str) for f in optional):
        raise BadInputError(f"target file {source}: 'optional_formats' must be a list of names")
    for fmt in optional:
        get_converter(fmt)
    analysis = data.get("analysis")
    if analysis is not None:
        if analysis not in ANALYSES:
            raise BadInputError(
                f"target file {source}: unknown analysis '{analysis}'; known: {', '.join(ANALYSES)}"
            )
        if data.get("analysis_format") not in (*formats, *optional):
            raise BadInputError(
                f"target file {source}: 'analysis_format' must be one of the target's formats, "
                f"got {data.get('analysis_format')!r}"
            )
    runtimes = data.get("runtime", {})
    for rt, cfg in runtimes.items():
        if not isinstance(cfg, dict) or set(cfg) - set(RUNTIME_KEYS):
            bad = sorted(set(cfg) - set(RUNTIME_KEYS)) if isinstance(cfg, dict) else cfg
            raise BadInputError(
                f"target file {source}: [runtime.{rt}] has {bad!r}; allowed keys: "
                f"{', '.join(RUNTIME_KEYS)}"
            )
    more_profiles = data.get("more_profiles", [])
    if not all(isinstance(p, str) for p in more_profiles):
        raise BadInputError(f"target file {source}: 'more_profiles' must be a list of names")
    channel_multiple = data.get("channel_multiple", 1)
    if channel_multiple < 1:
        raise BadInputError(
            f"target file {source}: channel_multiple must be >= 1, got {channel_multiple}"
        )
    int_io = data.get("int_io", "int8")
    if int_io not in INT_IO_CHOICES:
        raise BadInputError(
            f"target file {source}: int_io '{int_io}' is not one of {', '.join(INT_IO_CHOICES)}"
        )
    threads = data.get("threads")
    if threads is not None and threads < 1:
        raise BadInputError(f"target file {source}: threads must be >= 1, got {threads}")
    return Target(
        name=data["name"],
        description=data["description"],
        formats=tuple(formats),
        int_io=int_io,
        threads=threads,
        profile=data.get("profile"),
        more_profiles=tuple(more_profiles),
        channel_multiple=channel_multiple,
        optional_formats=tuple(optional),
        analysis=analysis,
        analysis_format=data.get("analysis_format"),
        runtime={k: dict(v) for k, v in runtimes.items()},
        raw=dict(data),
    )


def load_target(name: str) -> Target:
    """Load and validate the target file ``<name>.toml``.

    Raises:
        UnknownNameError: no such target; the message lists the known ones.
        BadInputError: the file does not validate.
    """
    files = _target_files()
    if name not in files:
        raise UnknownNameError(
            f"unknown target '{name}'; known targets: {', '.join(sorted(files))}"
        )
    source = f"{name}.toml"
    try:
        data = tomllib.loads(files[name].read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise BadInputError(f"target file {source} is not valid TOML: {err}") from err
    target = validate_target(data, source)
    if target.name != name:
        raise BadInputError(
            f"target file {source}: name '{target.name}' differs from the file stem"
        )
    return target


def list_targets() -> list[Target]:
    """Every shipped target, validated."""
    return [load_target(n) for n in target_names()]


def run_analysis(name: str, path: str) -> Any:
    """Run the registered analysis ``name`` on an artifact file."""
    import importlib

    module, func = ANALYSES[name].split(":")
    return getattr(importlib.import_module(module), func)(path)


def target_availability(target: Target) -> dict[str, Any]:
    """Can this target's artifacts be built here, and can they be run here?

    Built: every converter of the required chain (and, for ``build_all``, the optional ones)
    has its toolchain. Run: every artifact's runtime finds the target's device.

    Returns:
        ``{"build": bool, "build_all": bool, "run": bool, "reasons": [str, ...]}``.
    """
    from edgekit.converters import get_converter, plan_chain
    from edgekit.measure import runtime_unavailable_reason

    reasons: list[str] = []
    build = True
    for step in plan_chain(target.formats):
        why = get_converter(step).unavailable_reason()
        if why:
            build = False
            reasons.append(f"cannot build {step}: {why}")
    build_all = build
    for step in plan_chain(target.optional_formats):
        why = get_converter(step).unavailable_reason()
        if why:
            build_all = False
            reasons.append(f"cannot build {step}: {why}")
    run = True
    seen: set[tuple[str, str | None]] = set()
    for fmt in (*target.formats, *target.optional_formats):
        runtime = get_converter(fmt).runtime
        device = target.runtime.get(runtime, {}).get("device")
        if (runtime, device) in seen:
            continue
        seen.add((runtime, device))
        why = runtime_unavailable_reason(runtime, device)
        if why:
            run = False
            where = f" on {device}" if device else ""
            reasons.append(f"cannot run {fmt} ({runtime}{where}): {why}")
    return {"build": build, "build_all": build_all, "run": run, "reasons": reasons}
