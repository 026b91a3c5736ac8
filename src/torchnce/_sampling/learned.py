"""The learned-unigram sampler: class counts that grow with the true classes seen.

Sampling ``P(k) = w_k / W`` exactly without an O(C) rebuild per call: the weights are split as
``w = static + recent``, where ``static`` are the counts at the last compaction (kept as a
cumulative sum) and ``recent`` are the true classes added since (kept as a list). A uniform
``r`` in ``[0, W)`` maps to a search in the static cumulative sum when it is below the static
total, else to ``recent[r − static_total]``. The list is folded into the static part when it
outgrows ``max(C, 2²⁰)``, an O(C) step every O(C) updates.
"""

from __future__ import annotations

import threading
from typing import Any, cast, final

import torch

from torchnce._common.types import SampledValues
from torchnce._native import samplers as native
from torchnce._sampling import fast
from torchnce._sampling.draw import (
    UNIGRAM_RANGE_LIMIT,
    Rng,
    call_stream,
    check_ids,
    check_range_max,
    check_same_device,
    gather,
    sample_values,
    search_right,
    uniform_ints,
)
from torchnce._sampling.samplers import CandidateSampler
from torchnce._sampling.tables import weight_bins
from torchnce._sampling.unique import Draw, UniquePlan, too_many_tries, unique_plan

_GENERATOR = torch.Generator


@final
class LearnedUnigramSampler(CandidateSampler):
    r"""Classes drawn in proportion to how often they have been seen as true classes.

    .. math::
        P(k) = \operatorname{fl32}(w_k) / \operatorname{fl32}(W), \qquad
        w_k = 1 + \#\{\text{true classes so far equal to } k\}, \quad W = \textstyle\sum w

    Every ``sample`` draws and computes the expected counts with the weights *before* the
    batch, then adds the batch's true classes (row-major; only while ``W < 2³¹ − 1``).
    The counts are a buffer and the classes added since the last compaction are extra state,
    so ``state_dict()`` / ``load_state_dict()`` resume a sampler exactly: given the same
    generator state it draws what the uninterrupted one would.

    Args:
        range_max: ``C``, the number of classes; must be less than 2147483647.

    Raises:
        ValueError: ``range_max < 1`` or ``range_max >= 2147483647``.

    Note:
        Unlike TensorFlow, whose counts live inside a graph op and are lost on reload, the
        counts are checkpointable. A call rejected by validation leaves them unchanged.
        Eager CPU calls from several threads on one sampler run one at a time (in some
        order); elsewhere share a sampler between threads only with a lock of your own.

    Examples:
        >>> import torch, torchnce
        >>> sampler = torchnce.LearnedUnigramSampler(4)
        >>> _ = sampler.sample(torch.tensor([[3], [3]]), 2, generator=torch.Generator())
        >>> sampler.probability(torch.arange(4))  # counts 1, 1, 1, 3 out of 6
        tensor([0.1667, 0.1667, 0.1667, 0.5000])
    """

    range_max: int
    counts: torch.Tensor
    _base_cum: torch.Tensor
    _recent: torch.Tensor
    _one: torch.Tensor
    _total_dev: torch.Tensor

    def __init__(self, range_max: int) -> None:
        super().__init__()
        self.range_max = check_range_max(range_max, unigram=True)
        self.register_buffer("counts", torch.ones(self.range_max, dtype=torch.int32))
        self.register_buffer("_base_cum", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("_recent", torch.zeros(0, dtype=torch.int32), persistent=False)
        # The native draw's index into _base_cum (see _rebuild); empty where none was built.
        self.register_buffer("_guide", torch.zeros(0, dtype=torch.int32), persistent=False)
        self.register_buffer("_one", torch.ones(1, dtype=torch.int32), persistent=False)
        # W on the device, kept in step with _total by kernels (no host-to-device copy per step)
        self.register_buffer("_total_dev", torch.zeros((), dtype=torch.int64), persistent=False)
        # The number of recent classes lives in _core (_recent_len reads and writes it): a
        # _Pending until the first native call, then the samplers' module's LearnedCore,
        # which runs the calls that need no new buffer with no Python around them.
        self._core: Any = _Pending()
        self._fold_at = max(self.range_max, 1 << 20)
        self._rebuild(fresh=True)
        self.register_load_state_dict_post_hook(_rebuild_after_load)  # type: ignore[no-untyped-call]

    @property
    def total(self) -> int:
        """``W``, the sum of the weights."""
        return self._total

    @property
    def _total(self) -> int:
        """``W`` = ``C`` + the static counts' excess + the recent classes (always)."""
        return self.range_max + self._base_total + self._recent_len

    @property
    def _recent_len(self) -> int:
        """The number of recent classes (kept in ``_core``, which the native calls update)."""
        return int(self._core.recent_len)

    @_recent_len.setter
    def _recent_len(self, value: int) -> None:
        self._core.recent_len = value

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return self._probability(check_ids(ids, self.range_max))

    def _probability(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.counts.device)
        p = gather(self.counts, ids).float()
        if p.device.type == "cpu":
            return p.div_(float(self._total))
        return p.div_(self._total_dev.float())  # fl32(W), a true division on every device

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: Rng | None
    ) -> SampledValues:
        if fast.runs(tc) and (gen is None or type(gen) is _GENERATOR):
            values = self._core.sample(tc, num_sampled, unique, gen)  # the common call, whole
            if type(values) is SampledValues:
                return values
            if values is None:
                raise too_many_tries()
        buffers = cast("dict[str, torch.Tensor]", self._buffers)  # (module reads cost 0.5 µs)
        counts = buffers["counts"]
        if type(counts) is torch.Tensor and counts.is_cpu and fast.runs(tc):  # both on CPU
            return self._sample_native(buffers, tc, num_sampled, unique, gen)
        check_same_device("true_classes", tc, counts)
        block = lambda: self._plan(num_sampled)  # noqa: E731
        draw = self._draw(call_stream(gen, tc.device))
        values = sample_values(tc, num_sampled, unique, draw, self._probability, block)
        self._update(tc.reshape(-1))
        return values

    def _sample_native(
        self, buffers: dict[str, torch.Tensor], tc: torch.Tensor, num_sampled: int, unique: bool,
        gen: Rng | None,
    ) -> SampledValues:
        """``_sample`` in one native call where ``_core`` declined it (a first call, a seed
        stream, a call that grows the recent classes' buffer or folds; no pybind11 module),
        holding the core's lock (which its own calls take), so that calls from several threads
        run one at a time. The first call with the samplers' module makes the core."""
        core = self._core
        core.acquire()
        try:
            if self._core is not core:  # replaced while this thread waited: lock the new one
                return self._sample_native(buffers, tc, num_sampled, unique, gen)
            module = native.module_for(gen)
            if module is None or type(core) is not _Pending:
                return self._sample_locked(buffers, tc, num_sampled, unique, gen, module)
            made = module.LearnedCore()
            made.acquire()  # before other threads can see it
            try:
                made.recent_len = core.recent_len
                self._core = made
                self._bind()
                return self._sample_locked(buffers, tc, num_sampled, unique, gen, module)
            finally:
                made.release()
        finally:
            core.release()

    def _sample_locked(
        self, buffers: dict[str, torch.Tensor], tc: torch.Tensor, num_sampled: int, unique: bool,
        gen: Rng | None, module: Any,
    ) -> SampledValues:
        """The draw, the expected counts and ``_update`` (the recent classes' buffer grown
        first, the fold after) through the module's explicit call, else ``ctypes``."""
        total, recent_len = self._total, self._recent_len
        add = max(min(tc.numel(), UNIGRAM_RANGE_LIMIT - total), 0)
        end = recent_len + add
        append = add > 0 and end <= self._fold_at
        if append and end > buffers["_recent"].numel():
            self._reserve(end)
        if module is not None:
            values = fast.checked(module.sample_learned(
                tc, num_sampled, unique, gen, buffers["counts"], buffers["_base_cum"],
                buffers["_recent"], buffers["_total_dev"], buffers["_guide"], self._base_total,
                recent_len, total, self._guide_width, add, append))
        else:
            values = fast.checked(native.learned(
                buffers["counts"], buffers["_base_cum"], buffers["_recent"],
                buffers["_total_dev"], buffers["_guide"],
                (self._base_total, recent_len, total, self._guide_width, add, append), tc,
                num_sampled, unique, gen))
        if append:
            self._recent_len = end
        elif add:
            self._fold()
        return values

    def _draw(self, gen: Rng | None) -> Draw:
        static, recent = self.range_max + self._base_total, self._recent_len

        def draw(n: int) -> torch.Tensor:
            r = uniform_ints(n, self._total, gen, self.counts.device)
            head = r if self._base_total == 0 else search_right(self._base_cum, r)
            if recent == 0:
                return head
            tail = self._recent.index_select(0, (r - static).clamp_(0, recent - 1))
            return torch.where(r < static, head, tail)

        return draw

    def _update(self, ids: torch.Tensor) -> None:
        """Add the true classes, in order, while ``W`` stays below 2³¹ − 1."""
        room = UNIGRAM_RANGE_LIMIT - self._total
        if ids.numel() > room:
            ids = ids[: max(room, 0)]
        if ids.numel() == 0:
            return
        self.counts.index_add_(0, ids, self._one.expand(ids.numel()))
        self._total_dev.add_(ids.numel())
        end = self._recent_len + ids.numel()
        if end > self._fold_at:
            self._fold()
            return
        self._reserve(end)
        self._recent.narrow(0, self._recent_len, ids.numel()).copy_(ids)
        self._recent_len = end

    def _reserve(self, end: int) -> None:
        """Grow the recent classes' buffer to hold ``end`` of them (doubling, at least 1024,
        at most the fold's size)."""
        if end > self._recent.numel():
            size = min(max(2 * end, 1024), self._fold_at)
            grown = torch.empty(size, dtype=torch.int32, device=self.counts.device)
            grown[: self._recent_len] = self._recent[: self._recent_len]
            self._recent = grown
            self._bind()

    def _fold(self) -> None:
        """Fold the recent classes into the static cumulative sum (O(C)); the recent classes'
        buffer keeps its size for the next ones."""
        self._recent_len = 0
        self._rebuild(check=False)

    def _rebuild(self, *, check: bool = True, fresh: bool = False) -> None:
        """Recompute what is derived from ``counts`` and the recent classes (four O(C) ops;
        none for a ``fresh`` sampler, whose counts are all 1: nothing is read, so that one can
        be built on ``meta`` or under a FakeTensorMode)."""
        self._guide, self._guide_width = self.counts[:0], 0
        if fresh:
            self._base_cum, self._base_total = self.counts[:0].long(), 0
        else:
            recent = self._recent[: self._recent_len]
            static = self.counts.long()
            if recent.numel():
                static -= torch.bincount(recent, minlength=self.range_max)
            if check and (self.counts.shape != (self.range_max,) or bool((static < 1).any())):
                raise ValueError(
                    f"counts must be {self.range_max} integers >= 1 that include every recent"
                    f" class, got shape {tuple(self.counts.shape)}"
                )
            self._base_cum = torch.cumsum(static, 0)
            self._base_total = int(self._base_cum[-1]) - self.range_max
            if self._base_total == 0:
                self._base_cum = self._base_cum[:0]
            elif fast.runs(self._base_cum) and type(self.counts) is torch.Tensor:
                self._guide, self._guide_width = native.learned_guide(self._base_cum)
        self._total_dev.fill_(self._total)
        if self._total > UNIGRAM_RANGE_LIMIT:
            raise ValueError(f"counts must sum to at most {UNIGRAM_RANGE_LIMIT}, got {self._total}")
        self._blocks: dict[tuple[int, int], UniquePlan] = {}
        self._bins: tuple[list[float], list[float]] | None = None  # made by the first plan
        self._bind()

    def _bind(self) -> None:
        """Give ``_core`` the buffers and scalars it draws with (after any of them changed).
        Buffers off the CPU (or not plain tensors) make it a ``_Pending`` again (every call
        then takes the path for them; a later move back makes a new core)."""
        core = self._core
        if type(core) is _Pending:
            return
        names = ("counts", "_base_cum", "_recent", "_total_dev", "_guide")
        tensors = [self._buffers[name] for name in names]
        if all(type(t) is torch.Tensor and t.is_cpu for t in tensors):
            core.bind(*tensors, self._base_total, self._guide_width, self._fold_at)
        else:
            self._core = _Pending(core.recent_len)

    def _apply(self, fn: Any, recurse: bool = True) -> LearnedUnigramSampler:
        module = super()._apply(fn, recurse)
        self._bind()
        return cast("LearnedUnigramSampler", module)

    def __getstate__(self) -> dict[str, Any]:
        """The module's state with ``_core`` as a ``_Pending`` (a native object does not
        pickle or deep-copy; the next native call makes a new one)."""
        state = dict(super().__getstate__())  # type: ignore[no-untyped-call]
        state["_core"] = _Pending(self._recent_len)
        return state

    def _static_bins(self) -> tuple[list[float], list[float]]:
        """The static counts summarised as bins (``weight_bins``), read once per rebuild when
        a plan first needs them (the native draws need none, and skip their O(C) cost)."""
        if self._bins is None:
            self._bins = ([1.0 / self.range_max], [float(self.range_max)])  # uniform
            if self._base_total:
                bins = weight_bins(torch.diff(self._base_cum, prepend=self._base_cum[:1] * 0))
                self._bins = (bins[0].tolist(), bins[1].tolist())
        return self._bins

    def _plan(self, num_sampled: int) -> UniquePlan:
        """The unique-sampling plan for the weights until the recent classes double: the static
        counts' bins (read once per rebuild) and, as the worst case, all recent weight on one
        class. A function of the state alone, so seeded draws stay reproducible."""
        recent = 1 << max(self._recent_len - 1, 0).bit_length()
        key = (num_sampled, recent)
        if key not in self._blocks:
            p, count = self._static_bins()
            static = float(self.range_max + self._base_total)
            share = recent / (static + recent)
            self._blocks[key] = unique_plan([pj * (1 - share) for pj in p] + [share],
                                            [*count, 1.0], num_sampled, self.range_max)
        return self._blocks[key]

    def get_extra_state(self) -> dict[str, Any]:
        """The classes added since the last compaction, in order (fixes the id mapping)."""
        return {"recent": self._recent[: self._recent_len].long()}

    def set_extra_state(self, state: Any) -> None:
        recent = state.get("recent") if isinstance(state, dict) else None
        if not isinstance(recent, torch.Tensor) or recent.dim() != 1:
            raise ValueError(
                "state_dict must hold a 1-D 'recent' tensor in the sampler's extra state,"
                f" got {type(recent).__name__}"
            )
        ids = check_ids(recent, self.range_max)
        self._recent = ids.to(device=self.counts.device, dtype=torch.int32).contiguous()
        self._recent_len = self._recent.numel()
        self._bind()


def _rebuild_after_load(module: LearnedUnigramSampler, keys: object) -> None:
    """The load hook (a function of the module, so that a sampler pickles)."""
    module._rebuild()


class _Pending:
    """``LearnedUnigramSampler._core`` before the samplers' module makes one (and where it
    cannot, or the buffers are not on the CPU): the number of recent classes, the lock of the
    native calls, and a ``sample`` that declines every call."""

    __slots__ = ("_lock", "recent_len")

    def __init__(self, recent_len: int = 0) -> None:
        self.recent_len = recent_len
        self._lock = threading.RLock()

    def __reduce__(self) -> tuple[type[_Pending], tuple[int]]:
        return _Pending, (self.recent_len,)  # a new lock (a lock does not pickle)

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def sample(self, *args: object) -> bool:
        return False
