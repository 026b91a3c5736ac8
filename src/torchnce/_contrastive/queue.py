"""A memory queue of past keys as extra negatives (MoCo; PML's ``CrossBatchMemory``)."""

from __future__ import annotations

import math
from typing import Any, final

import torch

from torchnce._common.checks import check_int
from torchnce._contrastive.core import check_ids, check_keys, check_log_q


@final
class KeyQueue(torch.nn.Module):
    r"""A fixed-size FIFO of past keys with their item ids and log-Q, for extra negatives.

    ``enqueue`` appends a batch of (detached) keys and drops the oldest beyond ``capacity``;
    ``keys``, ``ids`` and ``log_q`` are the ``M <= capacity`` stored rows, ready to pass to
    :func:`mixed_negatives_loss` as ``sampled_keys``, ``sampled_log_q`` and ``sampled_ids``
    (with ``key_ids``, so a queued copy of a row's own positive item is masked):

    .. code-block:: python

        loss = torchnce.mixed_negatives_loss(
            q, k, queue.keys, batch_log_q=log_p, sampled_log_q=queue.log_q,
            key_ids=ids, sampled_ids=queue.ids)
        queue.enqueue(k, ids, log_q=log_p)  # after the loss: the batch is not its own negative

    The log-Q a queue needs. The queued keys are past in-batch positives, so a key's item,
    in a batch with probability ``p``, is in the queue ``M / B`` batches worth of keys about
    ``(M / B) p`` times. ``enqueue`` takes ``log p`` (the batch's ``batch_log_q``) and stores
    the per-draw ``log (p / B)``; :func:`mixed_negatives_loss` adds ``log M``, so the queued
    block is corrected by the log of the expected count in the queue:

    .. math::
        \ell_{i, B+m} = s(q_i, n_m) / \tau - \log\left(\frac{M}{B}\, p_m\right)

    Args:
        capacity: the number of keys kept, ``C >= 1``.
        dim: ``D``, the keys' dimension.
        dtype: the keys' and log-Q's dtype (default: torch's default dtype).
        device: where the queue lives (move it with ``.to()`` like any module).

    Raises:
        TypeError: a non-int ``capacity`` or ``dim``.
        ValueError: ``capacity`` or ``dim`` < 1.

    Note:
        The buffers ``key_memory`` ``[C, D]``, ``id_memory`` ``[C]`` and ``log_q_memory``
        ``[C]`` and the write position and fill (extra state, plain ints) are in the
        ``state_dict``. The stored rows are in storage order, not in age order (the losses do
        not depend on the order). A failed ``enqueue`` leaves the queue unchanged.

    References:
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
        CVPR 2020; Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020.

    Examples:
        >>> import torch, torchnce
        >>> queue = torchnce.KeyQueue(3, 2)
        >>> queue.enqueue(torch.ones(2, 2), torch.tensor([4, 5]), log_q=torch.zeros(2))
        >>> queue.enqueue(torch.zeros(2, 2), torch.tensor([6, 7]), log_q=torch.zeros(2))
        >>> len(queue), queue.ids.tolist()  # 4 was the oldest: overwritten by 7
        (3, [7, 5, 6])
    """

    capacity: int
    dim: int
    key_memory: torch.Tensor
    id_memory: torch.Tensor
    log_q_memory: torch.Tensor

    def __init__(
        self,
        capacity: int,
        dim: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.capacity = check_int("capacity", capacity, minimum=1)
        self.dim = check_int("dim", dim, minimum=1)
        self.register_buffer("key_memory", torch.zeros(capacity, dim, dtype=dtype, device=device))
        self.register_buffer("id_memory", torch.zeros(capacity, dtype=torch.int64, device=device))
        self.register_buffer("log_q_memory", torch.zeros(capacity, dtype=dtype, device=device))
        self._head = 0  # the next row to write
        self._size = 0  # the rows filled so far, at most capacity

    @property
    def keys(self) -> torch.Tensor:
        """``[M, D]``: the queued keys (no gradient)."""
        return self.key_memory[: self._size]

    @property
    def ids(self) -> torch.Tensor:
        """int64 ``[M]``: their item ids."""
        return self.id_memory[: self._size]

    @property
    def log_q(self) -> torch.Tensor:
        """``[M]``: their per-draw ``log (p / B)``, ready as ``sampled_log_q``."""
        return self.log_q_memory[: self._size]

    def __len__(self) -> int:
        return self._size

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: Any, *, log_q: Any) -> None:
        """Append ``keys`` ``[B, D]`` (detached), their int ``ids`` ``[B]`` and ``log_q``
        ``[B]``, the log-probability ``log p`` that each key's item is in a batch; beyond the
        capacity the oldest rows go. Every check runs before anything is written."""
        memory = self.key_memory
        if isinstance(keys, torch.Tensor) and keys.is_floating_point():
            if keys.dtype != memory.dtype:
                raise TypeError(f"keys must have the queue's dtype {memory.dtype}, got "
                                f"{keys.dtype}; use keys.to({memory.dtype}) or queue.to(dtype)")
            if keys.device != memory.device:
                raise ValueError(f"keys must be on the queue's device {memory.device}, got "
                                 f"{keys.device}; move the queue with queue.to(device)")
        k = check_keys("keys", keys, memory, "BD", (-1, self.dim))
        batch = k.shape[0]
        i = check_ids("ids", ids, "B", (batch,), k.device)
        lq = check_log_q("log_q", log_q, "B", (batch,), k)
        if batch == 0:
            return
        k, i, lq = k[-self.capacity:], i[-self.capacity:], lq[-self.capacity:]
        rows = torch.remainder(torch.arange(k.shape[0], device=k.device) + self._head,
                               self.capacity)
        self.key_memory.index_copy_(0, rows, k)
        self.id_memory.index_copy_(0, rows, i)
        self.log_q_memory.index_copy_(0, rows, lq - math.log(batch))
        self._head = (self._head + k.shape[0]) % self.capacity
        self._size = min(self._size + k.shape[0], self.capacity)

    def reset(self) -> None:
        """Empty the queue (the buffers keep their storage)."""
        self._head = self._size = 0

    def get_extra_state(self) -> dict[str, int]:
        """The write position and the fill, saved in the ``state_dict``."""
        return {"head": self._head, "size": self._size}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`'s dict (checked against the capacity)."""
        head, size = int(state["head"]), int(state["size"])
        if not (0 <= head < self.capacity and 0 <= size <= self.capacity):
            raise ValueError(f"state must hold a head in [0, {self.capacity}) and a size in "
                             f"[0, {self.capacity}], got {state!r}")
        self._head, self._size = head, size

    def extra_repr(self) -> str:
        return f"capacity={self.capacity}, dim={self.dim}, size={self._size}"
