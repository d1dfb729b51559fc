"""Channel-dependency analysis of a functional tf_keras model.

Every channel of every tensor carries a label: the id of an *element*, one output channel of
the layer that created it (a conv or dense layer, the model input, or a layer the analysis
cannot see through). The layer rules in :mod:`edgekit.compress._rules` pass labels on
(batch norm, activations, pooling, depthwise convs), create new ones (convs, dense layers)
or couple them (adds, grouped convs, channel splits and shuffles). Coupling is a union-find
over elements: a *class* is a set of elements that must be kept or removed together, and a
*component* is the set of classes that one producer's filters span, joined across producers.
A component whose classes can all be removed one by one is a prunable group.

Pruning keeps, in every tensor, the kept channels in their original order (a restriction of
the original network). The couplings are exactly what makes that restriction a valid network
again: equal kept counts per group of a grouped conv, per half of a split, and the same kept
positions in every group of a channel shuffle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import BadInputError


@dataclass
class Step:
    """One layer call of the model: the layer, its node and the ids of its tensors."""

    layer: Any
    node: Any
    inputs: list[str]
    outputs: list[str]
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]
    rule: Any = None


@dataclass
class Component:
    """Classes joined by shared producers; ``fixed`` says why it cannot be pruned, if so."""

    classes: list[int]
    producers: list[str]
    fixed: str | None = None
    consumers: list[str] = field(default_factory=list)


class ChannelGraph:
    """The labels of every tensor of ``model`` and the coupling between them.

    Raises:
        BadInputError: the model is not a functional model, shares a layer between several
            calls, nests a model, or has tensors whose shapes are not static.
    """

    def __init__(self, model: Any) -> None:
        from edgekit.compress._rules import rule_for

        self.model = model
        self.labels: dict[str, np.ndarray] = {}
        self.producers: dict[str, np.ndarray] = {}
        self._parent: list[int] = []
        self._owner: list[str | None] = []
        self._channel: list[int] = []
        self._fixed: dict[int, str] = {}
        self.steps = _steps(model)
        self.order = {layer.name: i for i, layer in enumerate(model.layers)}
        for step in self.steps:
            step.rule = rule_for(step.layer)
            in_labels = [self.labels[t] for t in step.inputs]
            outs = step.rule.propagate(step, in_labels, self)
            for tid, labels in zip(step.outputs, outs, strict=True):
                self.labels[tid] = labels
        for tensor in model.outputs:
            self.fix(self.labels[str(id(tensor))], "it is a model output")
        self.components = self._components()

    # -- element bookkeeping, used by the rules -------------------------------------------

    def new_elements(self, count: int, owner: str | None, fixed: str | None = None) -> np.ndarray:
        """Create ``count`` elements: the output channels of ``owner`` (None: no filters)."""
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        self._owner.extend([owner] * count)
        self._channel.extend(range(count))
        ids = np.arange(start, start + count, dtype=np.int64)
        if owner is not None:
            self.producers[owner] = ids
        if fixed is not None:
            self.fix(ids, fixed)
        return ids

    def fix(self, labels: np.ndarray, reason: str) -> None:
        """Mark elements as never removable (model input/output, a layer that mixes them)."""
        for e in np.asarray(labels).ravel():
            self._fixed.setdefault(int(e), reason)

    def masks(self, keep_class: dict[int, bool]) -> dict[str, np.ndarray]:
        """Tensor id -> which of its channels a pruning keeps (classes missing from
        ``keep_class`` are kept)."""
        keep_elem = np.ones(self.element_count, dtype=bool)
        for e in range(self.element_count):
            keep_elem[e] = keep_class.get(self.find(e), True)
        return {tid: keep_elem[labels] for tid, labels in self.labels.items()}

    def find(self, e: int) -> int:
        parent = self._parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def unite(self, a: np.ndarray, b: np.ndarray) -> None:
        """Couple ``a[i]`` with ``b[i]`` for every position ``i``."""
        a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
        if a.shape != b.shape:
            raise ValueError(f"cannot couple {a.size} channels with {b.size}")
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def unite_blocks(self, labels: np.ndarray, blocks: int) -> None:
        """Couple position ``j`` of every one of ``blocks`` equal consecutive blocks."""
        rows = np.asarray(labels).reshape(blocks, -1)
        for row in rows[1:]:
            self.unite(rows[0], row)

    def roots(self, labels: Iterable[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(labels)
        return np.array([self.find(int(e)) for e in arr.ravel()], dtype=np.int64).reshape(arr.shape)

    def element(self, e: int) -> tuple[str | None, int]:
        """(producer layer name or None, output channel) of element ``e``."""
        return self._owner[e], self._channel[e]

    @property
    def element_count(self) -> int:
        return len(self._parent)

    # -- components ----------------------------------------------------------------------

    def members(self) -> dict[int, list[int]]:
        """Elements of every class, keyed by the class root."""
        out: dict[int, list[int]] = {}
        for e in range(self.element_count):
            out.setdefault(self.find(e), []).append(e)
        return out

    def _components(self) -> list[Component]:
        members = self.members()
        # A second union-find, over class roots: the classes one producer spans belong together.
        comp_parent = {root: root for root in members}

        def find(r: int) -> int:
            while comp_parent[r] != r:
                comp_parent[r] = comp_parent[comp_parent[r]]
                r = comp_parent[r]
            return r

        for ids in self.producers.values():
            roots = {self.find(int(e)) for e in ids}
            first = find(min(roots))
            for r in roots:
                comp_parent[find(r)] = first
        by_comp: dict[int, Component] = {}
        for root, elems in sorted(members.items()):
            comp = by_comp.setdefault(find(root), Component(classes=[], producers=[]))
            comp.classes.append(root)
            for e in elems:
                owner = self._owner[e]
                if owner is not None and owner not in comp.producers:
                    comp.producers.append(owner)
                if comp.fixed is None and e in self._fixed:
                    comp.fixed = self._fixed[e]
        comps = [c for c in by_comp.values() if c.producers]
        for comp in comps:
            comp.producers.sort(key=self.order.__getitem__)
        self._attach_consumers(comps)
        comps.sort(key=lambda c: self.order[c.producers[0]])
        return comps

    def _attach_consumers(self, comps: list[Component]) -> None:
        comp_of = {root: i for i, comp in enumerate(comps) for root in comp.classes}
        for step in self.steps:
            seen: set[int] = set()
            for tid in step.inputs:
                for root in np.unique(self.roots(self.labels[tid])).tolist():
                    i = comp_of.get(root)
                    if i is not None and i not in seen:
                        seen.add(i)
                        comps[i].consumers.append(step.layer.name)


def _static(shape: Any, layer: Any) -> tuple[int, ...]:
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise BadInputError(
            f"cannot analyse channels of layer '{layer.name}': shape {tuple(shape)} is not "
            "static; build the model with a fixed input_shape"
        )
    return tuple(int(d) for d in dims)


def _steps(model: Any) -> list[Step]:
    from edgekit._keras import tf
    from edgekit.models._graph import layer_calls

    steps: list[Step] = []
    for call in layer_calls(model, "channel pruning"):
        steps.append(
            Step(
                layer=call.layer,
                node=call.node,
                inputs=call.inputs,
                outputs=call.outputs,
                in_shapes=[_static(t.shape, call.layer) for t in call.node.keras_inputs],
                out_shapes=[
                    _static(t.shape, call.layer) for t in tf.nest.flatten(call.node.outputs)
                ],
            )
        )
    return steps
