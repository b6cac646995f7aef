"""Live tensor bytes, tracked op by op: the peak of a step and what was alive at that peak.

Process RSS cannot measure one training step (freed memory is reused and never returned), and a
CPU torch has no allocator statistics. So we watch every op through a ``TorchDispatchMode``: each
tensor an op returns is keyed by its storage, counted once (views share a storage), and
un-counted by a ``weakref.finalize`` when the storage dies. The same code runs on real tensors
(measurement) and on ``meta`` tensors (prediction without computing anything).

What it cannot see: scratch memory a C++ kernel allocates and frees inside one op (oneDNN LSTM
temporaries, for instance). ``plan.py`` corrects for the one kernel where that matters (LSTM).
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "batch")


@dataclass
class _Record:
    nbytes: int
    t_alloc: int
    t_free: float  # inf while alive
    owner: str  # module path that created it, or "(phase)" outside any module
    category: str = "activations"


class LiveBytes(TorchDispatchMode):
    """Tracks live tensor bytes of everything dispatched while active.

    Use ``track(t, category)`` for tensors that existed before (parameters, optimizer state, the
    batch), ``watch(model)`` to attribute allocations to the module that made them, and
    ``label(t, category)`` to re-categorise a live tensor (e.g. gradients after backward).
    After exit: ``peak_bytes``, ``breakdown()`` and ``by_owner()`` at the peak.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[_Record] = []
        self._alive: dict[int, int] = {}  # id(storage) -> record index, while the storage lives
        self.clock = 0
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_clock = 0
        self._owners: list[str] = []
        self._hooks: list = []
        self.phase = "setup"  # owner of allocations made outside any module (loss, backward)

    # -- bookkeeping -------------------------------------------------------------------------
    def _add(self, t: torch.Tensor, category: str = "activations") -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._alive:  # a view or an in-place result: already counted
            rec = self.records[self._alive[key]]
            if st.nbytes() != rec.nbytes:  # resized in place (out= ops)
                self._move(st.nbytes() - rec.nbytes)
                rec.nbytes = st.nbytes()
            return
        self.clock += 1
        idx = len(self.records)
        owner = self._owners[-1] if self._owners else f"({self.phase})"
        self.records.append(_Record(st.nbytes(), self.clock, float("inf"), owner, category))
        self._alive[key] = idx
        weakref.finalize(st, self._free, key, idx).atexit = False
        self._move(st.nbytes())

    def _free(self, key: int, idx: int) -> None:
        rec = self.records[idx]
        if rec.t_free != float("inf"):
            return
        self.clock += 1
        rec.t_free = self.clock
        self._alive.pop(key, None)
        self._move(-rec.nbytes)

    def _move(self, delta: int) -> None:
        self.live_bytes += delta
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_clock = self.live_bytes, self.clock

    def track(self, tensors, category: str) -> None:
        """Count already-existing tensors (params, optimizer state, batch) from now on."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; valid: {', '.join(CATEGORIES)}")
        for t in tree_leaves(tensors):
            if isinstance(t, torch.Tensor):
                self._add(t, category)

    def index_of(self, t: torch.Tensor) -> int | None:
        """Index in ``records`` of the live storage of ``t`` (None if not tracked)."""
        return self._alive.get(id(t.untyped_storage()))

    def label(self, tensors, category: str) -> None:
        """Re-categorise live tensors (e.g. ``p.grad`` after backward)."""
        for t in tree_leaves(tensors):
            if isinstance(t, torch.Tensor):
                idx = self.index_of(t)
                if idx is not None:
                    self.records[idx].category = category

    def watch(self, model: torch.nn.Module, prefix: str = "") -> None:
        """Attribute allocations in each submodule's forward to its path (``blocks.0.time``),
        after ``prefix`` (``discriminator.layers.0``).

        Modules that run their children's weights directly (``bypasses_children``, the Mamba
        block) are watched whole: a hook on a child would switch them to their slower path.
        """
        opaque = [n + "." for n, m in model.named_modules() if getattr(m, "bypasses_children", 0)]
        for name, mod in model.named_modules():
            if any(name.startswith(p) for p in opaque):
                continue
            name = prefix + name if name else prefix.rstrip(".") or type(model).__name__
            self._hooks.append(mod.register_forward_pre_hook(lambda m, a, n=name: self._enter(n)))
            self._hooks.append(mod.register_forward_hook(lambda m, a, o: self._exit()))

    def _enter(self, name: str) -> None:
        self._owners.append(name)

    def _exit(self) -> None:
        if self._owners:
            self._owners.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        return super().__exit__(*exc)

    # -- results -----------------------------------------------------------------------------
    def _at_peak(self, clock: int | None = None):
        t = self.peak_clock if clock is None else clock
        return [r for r in self.records if r.t_alloc <= t < r.t_free]

    def breakdown(self, clock: int | None = None) -> dict[str, int]:
        """Bytes alive at the peak (or at ``clock``) by category; sums to ``peak_bytes``."""
        out = dict.fromkeys(CATEGORIES, 0)
        for r in self._at_peak(clock):
            out[r.category] += r.nbytes
        return out

    def by_owner(self, top: int | None = 8, category: str = "activations") -> list[tuple[str, int]]:
        """The ``top`` (None: all) modules by bytes of ``category`` alive at the peak."""
        acc: dict[str, int] = defaultdict(int)
        for r in self._at_peak():
            if r.category == category:
                acc[r.owner] += r.nbytes
        return sorted(acc.items(), key=lambda kv: -kv[1])[:top]
