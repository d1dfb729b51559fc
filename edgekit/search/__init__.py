"""Network search driven by measured or predicted cost on the target.

``netadapt(model, data, out_dir, NetAdaptOptions(...), target=..., profile=...)`` shrinks a
trained network one channel group at a time until it meets its budgets (latency, MACs,
size), checkpointing every iteration; ``resume(out_dir)`` continues a killed run. The
resources, budgets and the reduction schedule are public so that benchmarks and other
searches reuse them.
"""

from __future__ import annotations

from edgekit.search._executor import (
    Executor,
    LocalPoolExecutor,
    ProposalResult,
    ProposalTask,
    RayExecutor,
    SerialExecutor,
    fine_tune_steps,
    make_executor,
    run_proposal,
)
from edgekit.search._loop import result_epochs, train_from_scratch, train_width
from edgekit.search._report import write_chart
from edgekit.search._resources import (
    Budget,
    Meter,
    Resource,
    get_resource,
    list_resources,
    make_meter,
    measure_artifacts,
    parse_budget,
    register_resource,
)
from edgekit.search._schedule import (
    derive_seed,
    iteration_target,
    largest_feasible,
    reduction_schedule,
    resource_reduction,
)
from edgekit.search.netadapt import (
    CHART,
    REPORT,
    STATE,
    STATUSES,
    NetAdaptOptions,
    ZooSpec,
    check_budgets,
    check_out_dir,
    fewest_channels_removed,
    netadapt,
    netadapt_report,
    resume,
    train_zoo_model,
)

__all__ = [
    "CHART",
    "REPORT",
    "STATE",
    "STATUSES",
    "Budget",
    "Executor",
    "LocalPoolExecutor",
    "Meter",
    "NetAdaptOptions",
    "ProposalResult",
    "ProposalTask",
    "RayExecutor",
    "Resource",
    "SerialExecutor",
    "ZooSpec",
    "check_budgets",
    "check_out_dir",
    "derive_seed",
    "fewest_channels_removed",
    "fine_tune_steps",
    "get_resource",
    "iteration_target",
    "largest_feasible",
    "list_resources",
    "make_executor",
    "make_meter",
    "measure_artifacts",
    "netadapt",
    "netadapt_report",
    "parse_budget",
    "reduction_schedule",
    "register_resource",
    "resource_reduction",
    "result_epochs",
    "resume",
    "run_proposal",
    "train_from_scratch",
    "train_width",
    "train_zoo_model",
    "write_chart",
]
