"""Evaluate a model whose early part is unchanged without running that part again.

A method that edits one layer at a time and scores each edit on the validation split (CaP's
structural search) re-runs, at every trial, the whole network on inputs whose path up to the
edited layer has not changed. :class:`PrefixCache` traces the model once (``torch.fx``), splits
its graph at the edited modules — the *suffix* is every node that depends on them, the
*frontier* the values the suffix reads from before them — computes the frontier once per batch
and afterwards runs only the suffix. The suffix runs the same operations on the same inputs as
the whole model would, so the outputs are the same.

The cache holds the frontier of every validation batch; when that would exceed ``max_bytes``
(or the model cannot be traced), scoring falls back to whole-model passes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import fx, nn

DEFAULT_MAX_BYTES = 2 * 1024**3  # the frontier of the whole validation split, all batches


class _Prefix(fx.Interpreter):
    """Runs the nodes outside ``suffix`` and keeps every value (the frontier is read after)."""

    def __init__(self, gm: fx.GraphModule, suffix: set[fx.Node]) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.suffix = suffix

    def run_node(self, n: fx.Node):
        return None if n in self.suffix else super().run_node(n)


class PrefixCache:
    """Outputs of ``model`` on ``batches`` after edits to a few of its modules.

    Args:
        model: the network; its modules are shared with the trace, so edits to their weights
            and buffers are seen.
        max_bytes: the most frontier memory held (else whole-model passes).
    """

    def __init__(self, model: nn.Module, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.model, self.max_bytes = model, max_bytes
        self.key: tuple | None = None
        self.frontier: list[dict[fx.Node, torch.Tensor]] | None = None
        try:
            self.gm: fx.GraphModule | None = fx.symbolic_trace(model)
        except Exception:  # noqa: BLE001 (any trace failure: fall back to whole passes)
            self.gm = None
        self.suffix: set[fx.Node] = set()
        self.prefix: list[fx.Node] = []

    def _split(self, changed: Sequence[str]) -> tuple[set[fx.Node], list[fx.Node]] | None:
        """The nodes depending on ``changed`` modules, and the frontier they read."""
        assert self.gm is not None
        graph = self.gm.graph
        suffix: set[fx.Node] = set()
        for node in graph.nodes:  # topological order: a node's inputs come first
            edited = node.op == "call_module" and node.target in changed
            if edited or any(a in suffix for a in node.all_input_nodes):
                suffix.add(node)
        if not any(n.op == "call_module" and n.target in changed for n in suffix):
            return None  # a changed module is not called as a module: cannot split there
        frontier = [n for n in graph.nodes if n not in suffix and any(u in suffix for u in n.users)]
        return suffix, frontier

    def outputs(self, batches: list, changed: Sequence[str], prefix_key: Hashable, device):
        """The model's outputs on each batch's input; yields ``(output, batch)``.

        ``prefix_key`` identifies the state of everything outside ``changed`` and what runs
        after it: the frontier is recomputed only when it (or ``changed``) differs from the
        last call's."""
        key = (tuple(changed), prefix_key)
        if self.gm is not None and key != self.key:
            self.key, self.frontier = key, None
            split = self._split(changed)
            if split is not None:
                self.suffix, nodes = split
                self.prefix = [n for n in self.gm.graph.nodes if n not in self.suffix]
                self.frontier = self._fill(batches, nodes, device)
        for i, (x, y) in enumerate(batches):
            x = x.to(device)
            if self.frontier is None:
                yield self.model(x), y
                continue
            env = dict.fromkeys(self.prefix)  # never run: the suffix reads only the frontier
            env.update({n: v.clone() for n, v in self.frontier[i].items()})  # in-place safe
            yield fx.Interpreter(self.gm).run(x, initial_env=env), y

    def _fill(self, batches: list, nodes: list[fx.Node], device) -> list | None:
        frontier, total = [], 0
        for x, _ in batches:
            interp = _Prefix(self.gm, self.suffix)
            interp.run(x.to(device))
            values = {n: interp.env[n] for n in nodes}
            if not all(isinstance(v, torch.Tensor) for v in values.values()):
                return None  # a non-tensor crosses the split (shapes, tuples): no cache
            total += sum(v.numel() * v.element_size() for v in values.values())
            if total > self.max_bytes:
                return None
            frontier.append(values)
        return frontier
