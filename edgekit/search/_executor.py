"""Where proposals are fine-tuned and evaluated: in this process, a local process pool, or
a Ray cluster.

A proposal travels as a :class:`ProposalTask`: the path of the ``.keras`` file it is pruned
from, the pruning plan, a seed and the training settings. Whoever runs it loads the file,
prunes, fine-tunes for a fixed number of batches with that seed, evaluates on the validation
split and saves the result beside the checkpoint, so the result does not depend on the
executor (nor on the order in which workers finish).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import Dataset
from edgekit.errors import BadInputError, EdgekitError, RuntimeUnavailableError

log = logging.getLogger(__name__)

RAY_INSTALL = "pip install 'ray==2.60.0'"
MEASURE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ProposalTask:
    """One proposal to build, fine-tune and evaluate.

    Attributes:
        index: position of the proposal in its iteration (results come back in this order).
        model_path: the ``.keras`` file of the network it is pruned from.
        plan: group name -> channels to keep (see :func:`edgekit.compress.prune_channels`).
        out_path: where the fine-tuned proposal is saved.
        seed: seeds every random choice of its fine-tuning.
        steps: fine-tuning batches.
        batch_size: images per batch.
        learning_rate: initial learning rate (cosine decay over ``steps``).
        criterion: channel importance, ``l1`` or ``l2``.
        bn_batches: training batches the BatchNormalization statistics are re-estimated on
            after fine-tuning, or after pruning when ``steps`` is 0 (0: never); see
            :func:`edgekit.train.recalibrate_batchnorm`.
        trust: the source file may hold code-carrying layers (see ``load_keras_model``).
        save: save the proposal at ``out_path`` (a screened proposal, only scored, is not).
    """

    index: int
    model_path: str
    plan: dict[str, int]
    out_path: str
    seed: int
    steps: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    criterion: str = "l1"
    bn_batches: int = 0
    trust: bool = False
    save: bool = True


@dataclass(frozen=True)
class ProposalResult:
    """What running a :class:`ProposalTask` gave."""

    index: int
    accuracy: float
    out_path: str
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    loss: float = float("nan")


# A short fine-tuning's training step is traced into a graph (``tf.function``) when it runs
# more than EAGER_STEPS batches, or when its work (batches x images per batch x MACs of one
# image) reaches TRACE_MIN_MACS; otherwise it runs eagerly. Tracing costs seconds whatever the
# batch; a traced step then runs faster by what TensorFlow's graph optimizations save. Measured
# side by side in benchmarks/finetune_step.py (section finetune_step of RESULTS.md): a whole
# 15-batch fine-tuning of MobileNet v2 at 176 px took 0.90 of the eager time, tracing
# included; the tests' tiny searches run 1-4 batches, where tracing costs more than it saves.
EAGER_STEPS = 20
TRACE_MIN_MACS = 40e9


def fine_tune_steps(
    model: Any,
    data: Dataset,
    steps: int,
    *,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train ``model`` for ``steps`` batches of the training split, with a fixed seed.

    The short fine-tuning of a proposal: the optimizer, loss and learning-rate decay of
    :func:`edgekit.train.train_model` (:func:`edgekit.train.compile_model`), counted in
    batches rather than epochs, without augmentation (a few hundred batches are spent
    recovering from the pruning, not learning invariances). The step runs eagerly or traced
    (see :data:`TRACE_MIN_MACS`), chosen from the network and ``steps``; either way the
    result depends only on the model, the data, ``steps`` and ``seed``.

    Returns:
        ``{"loss": [...]}``: the mean training loss (one value).
    """
    if steps <= 0:
        return {}
    from edgekit._keras import tf
    from edgekit.train import compile_model, set_seed

    set_seed(seed)
    n = len(data.x_train)
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat().batch(batch_size)
    compile_model(model, learning_rate, steps)
    variables = model.trainable_variables
    # The optimizer's slots are created here, not in the first step: a traced function that
    # creates variables is traced twice.
    model.optimizer.build(variables)
    loss_fn = model.loss

    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            if model.losses:
                loss += tf.add_n(model.losses)
        grads = tape.gradient(loss, variables)
        model.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    if _traced(model, steps, batch_size):
        step = tf.function(step)
    losses = [float(step(x, y)) for x, y in ds.take(steps)]
    return {"loss": [float(np.mean(losses))]}


def _traced(model: Any, steps: int, batch_size: int) -> bool:
    """Whether :func:`fine_tune_steps` traces its step (see :data:`TRACE_MIN_MACS`)."""
    if steps > EAGER_STEPS:
        return True
    from edgekit.compress.channels import count_macs

    try:
        macs = count_macs(model)
    except BadInputError:  # a dynamic input size: no count, go by the steps alone
        return False
    return steps * batch_size * macs >= TRACE_MIN_MACS


def val_accuracy(model: Any, data: Dataset) -> float:
    """Top-1 accuracy of a Keras model on the validation split (the test split if empty)."""
    return val_scores(model, data)[0]


# Validation losses are compared rounded to this many decimals, so that executors whose float
# sums differ in the last bits (another process, another thread count) rank alike.
LOSS_DECIMALS = 5


def val_scores(model: Any, data: Dataset) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of a Keras model on the validation split (the
    test split if empty); the loss is rounded to :data:`LOSS_DECIMALS` decimals."""
    from edgekit.train import evaluate_probs

    x, y = (data.x_val, data.y_val) if len(data.x_val) else (data.x_test, data.y_test)
    probs = evaluate_probs(model, x)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == y))
    picked = np.clip(probs[np.arange(len(y)), np.asarray(y, dtype=np.int64)], 1e-7, 1.0)
    return accuracy, round(float(-np.mean(np.log(picked.astype(np.float64)))), LOSS_DECIMALS)


def run_proposal(task: ProposalTask, data: Dataset) -> ProposalResult:
    """Prune, fine-tune, evaluate and save one proposal (what every executor runs)."""
    from edgekit.compress import prune_channels
    from edgekit.models._io import save_keras_model
    from edgekit.train import recalibrate_batchnorm

    t0 = time.perf_counter()
    model = prune_channels(_source_model(task), task.plan, task.criterion)
    history = fine_tune_steps(
        model,
        data,
        task.steps,
        batch_size=task.batch_size,
        learning_rate=task.learning_rate,
        seed=task.seed,
    )
    # Statistics of the fine-tuned weights (of the pruned ones, for a screened score with no
    # steps). Not before the fine-tuning as well: in training mode every BatchNormalization
    # layer normalizes with its batch's own statistics, and this pass replaces the moving
    # statistics whole.
    recalibrate_batchnorm(model, data, task.bn_batches, batch_size=task.batch_size, seed=task.seed)
    accuracy, loss = val_scores(model, data)
    out_path = ""
    if task.save:
        save_keras_model(model, task.out_path)
        out_path = task.out_path
    del model
    gc.collect()
    return ProposalResult(
        task.index, accuracy, out_path, round(time.perf_counter() - t0, 2), history, loss
    )


# The last network proposals were pruned from: every proposal of an iteration reads the same
# file, and pruning does not modify its source.
_SOURCE: dict[str, Any] = {}


def _source_model(task: ProposalTask) -> Any:
    from edgekit.models._io import load_keras_model

    stat = Path(task.model_path).stat()
    key = f"{Path(task.model_path).absolute()}:{stat.st_mtime_ns}:{stat.st_size}:{task.trust}"
    if _SOURCE.get("key") != key:
        _SOURCE.clear()
        _SOURCE.update(key=key, model=load_keras_model(task.model_path, trust=task.trust))
    return _SOURCE["model"]


class Executor:
    """Runs proposal tasks; results come back in task order whatever finishes first.

    Use as a context manager, or call :meth:`close`.
    """

    name = "base"

    def start(self, data: Dataset) -> None:
        """Make ``data`` available to the workers (called once before :meth:`map`)."""
        raise NotImplementedError

    def map(self, tasks: Sequence[ProposalTask]) -> list[ProposalResult]:
        """Run every task; results in the order of ``tasks``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SerialExecutor(Executor):
    """Runs every task in this process, one after the other."""

    name = "serial"

    def __init__(self) -> None:
        self.data: Dataset | None = None

    def start(self, data: Dataset) -> None:
        self.data = data

    def map(self, tasks: Sequence[ProposalTask]) -> list[ProposalResult]:
        if self.data is None:
            raise RuntimeError("SerialExecutor.start(data) was not called")
        return [run_proposal(task, self.data) for task in tasks]


_WORKER_DATA: list[Dataset] = []
# How often a pool worker checks that the process that started it is still there.
PARENT_CHECK_S = 1.0


def _init_worker(data: Dataset, parent: int) -> None:
    # Runs once in each spawned worker: the data set is sent once, not with every task.
    import edgekit  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

    _exit_with_parent(parent)
    _WORKER_DATA[:] = [data]


def _exit_with_parent(parent: int) -> None:
    """End this worker once the process ``parent`` is gone.

    A search killed with SIGKILL or SIGTERM cannot shut its pool down, and its workers
    went on living: each holds a TensorFlow and a network (3.5 GB at 176 px), finishes a
    task nobody will read, and slows every later measurement on the machine.
    """
    import threading

    if os.getppid() != parent:  # started by someone else: nothing to watch
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="edgekit-parent-watch", daemon=True).start()


def _run_in_worker(task: ProposalTask) -> ProposalResult:
    return run_proposal(task, _WORKER_DATA[0])


class LocalPoolExecutor(Executor):
    """A local pool of ``workers`` processes (started with 'spawn': TensorFlow does not
    survive a fork). The pool is started on the first :meth:`map` and reused."""

    name = "process_pool"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise BadInputError(f"--workers must be >= 1; got {workers}")
        self.workers = workers
        self.data: Dataset | None = None
        self._pool: Any = None

    def start(self, data: Dataset) -> None:
        self.data = data

    def pool(self) -> Any:
        """The process pool (a ``concurrent.futures.ProcessPoolExecutor``), started on the
        first call. Its workers end with this process, however it ends."""
        import concurrent.futures
        import multiprocessing

        if self.data is None:
            raise RuntimeError("LocalPoolExecutor.start(data) was not called")
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.data, os.getpid()),
            )
        return self._pool

    def map(self, tasks: Sequence[ProposalTask]) -> list[ProposalResult]:
        import concurrent.futures

        try:
            return list(self.pool().map(_run_in_worker, tasks))
        except concurrent.futures.process.BrokenProcessPool as err:
            self.close()
            raise EdgekitError(
                f"a proposal worker died ({err}); the last checkpoint is kept: continue with "
                "--resume, or use fewer --workers if memory ran out"
            ) from err

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Proposals as Ray tasks (``--ray-address``), one CPU each.

    Nothing is assumed to be shared between the nodes but Ray itself: the network a
    proposal is pruned from travels as ``.keras`` bytes through Ray's object store, the data
    set is put there once, and each fine-tuned proposal comes back as bytes that the driver
    writes into the run's folder. Every node needs edgekit installed (the same version).

    A device attached to one node is declared there as a Ray custom resource
    (``ray start ... --resources '{"coral_usb": 1}'``); with ``device_resource`` set, latency
    measurements run as Ray tasks that need one unit of it, so they run on that node, one at a
    time.

    Args:
        address: a Ray address (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), or ``local``
            to start a Ray instance in this process with ``num_cpus`` CPUs (and one unit of
            ``device_resource``, if given: a test or a single machine with a device).
        num_cpus: CPUs of a ``local`` instance.
        device_resource: the custom resource that marks the node holding the device.
    """

    name = "ray"

    def __init__(
        self, address: str, num_cpus: int | None = None, device_resource: str | None = None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeUnavailableError(
                f"--ray-address needs Ray, which is not installed: {RAY_INSTALL} (or pip "
                "install 'edgekit[ray]')"
            ) from None
        self._ray = ray
        self.address = address
        self.num_cpus = num_cpus
        self.device_resource = device_resource
        self._owned = False
        self._data_ref: Any = None
        self._proposal: Any = None
        self._measure: Any = None

    def _init(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        # Workers import TensorFlow: they must select Keras 2 first, like every entry point.
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": os.environ.get("EDGEKIT_RAY_LOG") == "1",
            "runtime_env": {"env_vars": {"TF_USE_LEGACY_KERAS": "1"}},
        }
        try:
            if self.address == "local":
                resources = {self.device_resource: 1} if self.device_resource else None
                ray.init(num_cpus=self.num_cpus, resources=resources, **options)
                self._owned = True
            else:
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RuntimeUnavailableError(
                f"cannot connect to the Ray cluster at --ray-address {self.address}: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; start it with "
                "`ray start --head` (and `ray start --address HEAD:6379` on the other nodes)"
            ) from err
        if self.device_resource:
            total = ray.cluster_resources().get(self.device_resource, 0)
            if total < 1:
                raise RuntimeUnavailableError(
                    f"no node of the Ray cluster at {self.address} offers the resource "
                    f"'{self.device_resource}'; start the node that holds the device with "
                    f"ray start --resources '{{\"{self.device_resource}\": 1}}'"
                )
        self._proposal = ray.remote(num_cpus=1)(_ray_proposal)

    def start(self, data: Dataset) -> None:
        self._init()
        self._data_ref = self._ray.put(data)

    def map(self, tasks: Sequence[ProposalTask]) -> list[ProposalResult]:
        import dataclasses

        from edgekit._io import write_bytes_atomic

        ray = self._ray
        if self._data_ref is None:
            raise RuntimeError("RayExecutor.start(data) was not called")
        sources: dict[str, Any] = {}
        refs = []
        for task in tasks:
            if task.model_path not in sources:
                sources[task.model_path] = ray.put(Path(task.model_path).read_bytes())
            refs.append(self._proposal.remote(task, sources[task.model_path], self._data_ref))
        try:
            done = ray.get(refs)
        except ray.exceptions.RayError as err:
            raise EdgekitError(
                f"a proposal failed on the Ray cluster ({_first_line(err)}); the last "
                "checkpoint is kept: continue with --resume"
            ) from err
        results = []
        for task, (result, blob) in zip(tasks, done, strict=True):
            if task.save:
                write_bytes_atomic(Path(task.out_path), blob)
                result = dataclasses.replace(result, out_path=task.out_path)
            results.append(result)
        return results

    def measure_fn(self) -> Any:
        """A function ``(artifact, sample, runs, warmup, threads) -> latency stats`` that
        measures on the node holding :attr:`device_resource`, or None without one."""
        if not self.device_resource:
            return None
        self._init()
        remote = self._ray.remote(num_cpus=0, resources={self.device_resource: 1})(_ray_measure)

        def measure(
            path: Path, sample: np.ndarray, runs: int, warmup: int, threads: int | None
        ) -> dict[str, Any]:
            if not self._ray.is_initialized():  # never let Ray start a stray local instance
                raise RuntimeError("RayExecutor measurement after close()")
            blob = Path(path).read_bytes()
            ref = remote.remote(blob, Path(path).suffix, sample, runs, warmup, threads)
            try:
                return self._ray.get(ref, timeout=MEASURE_TIMEOUT_S)
            except self._ray.exceptions.GetTimeoutError:
                self._ray.cancel(ref, force=True)
                raise RuntimeUnavailableError(
                    f"no node with '{self.device_resource}' ran the measurement within "
                    f"{MEASURE_TIMEOUT_S:g}s; is that node up (`ray status`)?"
                ) from None
            except self._ray.exceptions.RayError as err:
                raise RuntimeUnavailableError(
                    f"the measurement on the node with '{self.device_resource}' failed "
                    f"({_first_line(err)})"
                ) from err

        measure.where = f"the Ray node with resource '{self.device_resource}'"  # type: ignore[attr-defined]
        return measure

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
            self._owned = False


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__


def _ray_proposal(task: ProposalTask, source: bytes, data: Dataset) -> tuple[ProposalResult, bytes]:
    """A proposal on a Ray worker: the network arrives and leaves as bytes."""
    import dataclasses
    import tempfile

    import edgekit  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

    with tempfile.TemporaryDirectory(prefix="edgekit-ray-") as tmp:
        src = Path(tmp) / "source.keras"
        src.write_bytes(source)
        out = Path(tmp) / "proposal.keras"
        local = dataclasses.replace(task, model_path=str(src), out_path=str(out))
        result = run_proposal(local, data)
        return result, out.read_bytes() if task.save else b""


def _ray_measure(
    blob: bytes, suffix: str, sample: np.ndarray, runs: int, warmup: int, threads: int | None
) -> dict[str, Any]:
    """A latency measurement on the Ray node that holds the device."""
    import dataclasses
    import os
    import socket
    import tempfile

    import edgekit  # noqa: F401
    from edgekit.measure import measure_latency, open_runner

    with tempfile.TemporaryDirectory(prefix="edgekit-ray-") as tmp:
        path = Path(tmp) / f"artifact{suffix}"
        path.write_bytes(blob)
        runner = open_runner("litert", path, threads=threads)
        stats = measure_latency(runner, sample, runs=runs, warmup=warmup)
        out: dict[str, Any] = {k: float(v) for k, v in dataclasses.asdict(stats).items()}
        out.update({"host": socket.gethostname(), "pid": os.getpid()})
        return out


def default_workers() -> int:
    """The default pool size: the CPU count, at most 4 (each worker holds a TensorFlow)."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


def make_executor(
    workers: int | None = None,
    ray_address: str | None = None,
    ray_device_resource: str | None = None,
) -> Executor:
    """The executor for ``--workers`` / ``--ray-address``.

    ``workers`` 1 runs proposals in this process; more starts a local process pool; None
    means :func:`default_workers` (a pool wherever there is more than one core).

    Raises:
        BadInputError: ``workers`` < 1, or both a pool and Ray were asked for.
        RuntimeUnavailableError: Ray was asked for and is not installed.
    """
    if ray_address:
        if workers is not None:
            raise BadInputError(
                f"--workers {workers} and --ray-address {ray_address} exclude each other; "
                "Ray decides where proposals run"
            )
        return RayExecutor(ray_address, device_resource=ray_device_resource)
    if ray_device_resource:
        raise BadInputError("--ray-device-resource needs --ray-address")
    if workers is None:
        workers = default_workers()
    if workers < 1:
        raise BadInputError(f"--workers must be >= 1; got {workers}")
    return SerialExecutor() if workers == 1 else LocalPoolExecutor(workers)


def executor_name(executor: Executor) -> str:
    """A short description for reports."""
    workers = getattr(executor, "workers", None)
    return f"{executor.name}({workers})" if workers else executor.name
