"""Which classes a rank owns, and checkpoints that move between world sizes and strategies.

A sharded layer's ``state_dict`` on rank ``r`` holds ``weight`` ``[n_r, D]`` and ``bias``
``[n_r]``: the rows of the classes :func:`shard_ids` assigns to ``r``, in row order, exactly
shard ``r`` of TensorFlow's partitioned variable; with ``update=RowUpdate("adagrad" |
"rowwise_adagrad")`` also the accumulators of those rows (``update.weight_state``,
``update.bias_state``). The sampler's buffers are replicated. So a single-process
:class:`torchnce.NCELoss` state dict (``weight`` ``[C, D]``, ``bias`` ``[C]``, the
accumulators ``[C, …]``) is the union of the shards, and re-sharding is a gather followed by a
split.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import cast

import torch

from torchnce._common.checks import check_choice, check_int
from torchnce._common.lookup import shard_sizes
from torchnce._common.types import STRATEGIES, PartitionStrategy

# the entries with one row per class: the tables and a RowUpdate's accumulators
TABLES = ("weight", "bias", "update.weight_state", "update.bias_state")
# their shards in a single-process layer with num_shards > 1: weight.<i>, update.weight_state_<i>
_SHARD_KEY = re.compile(r"^(weight|bias)\.(\d+)$|^(update\.(?:weight|bias)_state)_(\d+)$")


def shard_ids(
    num_classes: int, rank: int, world_size: int, partition_strategy: PartitionStrategy = "mod"
) -> torch.Tensor:
    r"""The global class ids whose rows rank ``rank`` of ``world_size`` holds, in row order.

    .. math::

        \text{mod}: \{ r, r + P, r + 2P, \dots \} \qquad
        \text{div}: [o_r, o_r + n_r), \; n_p = \lfloor C/P \rfloor + [p < C \bmod P]

    (``o_r`` the rows of the ranks before ``r``), TensorFlow's ``embedding_lookup`` layout.

    Args:
        num_classes: C.
        rank: r in ``[0, P)``.
        world_size: P, at most C.
        partition_strategy: ``"mod"`` or ``"div"``.

    Returns:
        int64 ``[n_r]``.

    Raises:
        TypeError: non-int sizes.
        ValueError: sizes < 1, a rank outside ``[0, P)``, ``P > C``, an unknown strategy.

    Examples:
        >>> from torchnce.distributed import shard_ids
        >>> shard_ids(10, 1, 3, "mod").tolist(), shard_ids(10, 1, 3, "div").tolist()
        ([1, 4, 7], [4, 5, 6])
    """
    sizes = _sizes(num_classes, world_size, partition_strategy)
    rank = check_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if partition_strategy == "mod":
        return torch.arange(rank, num_classes, world_size)
    start = sum(sizes[:rank])
    return torch.arange(start, start + sizes[rank])


def _sizes(num_classes: int, world_size: int, strategy: str) -> list[int]:
    num_classes = check_int("num_classes", num_classes, minimum=1)
    world_size = check_int("world_size", world_size, minimum=1)
    check_choice("partition_strategy", strategy, STRATEGIES)
    if world_size > num_classes:
        raise ValueError(f"world_size must be at most num_classes={num_classes} (one class "
                         f"per rank), got {world_size}")
    return shard_sizes(num_classes, world_size, strategy)


def _merged(
    state: Mapping[str, torch.Tensor], strategy: PartitionStrategy
) -> dict[str, torch.Tensor]:
    """A single-process state dict with ``weight.<i>``/``bias.<i>`` shards (``num_shards > 1``)
    turned into ``weight``/``bias`` tables."""
    shards: dict[str, dict[int, torch.Tensor]] = {}
    out = {}
    for key, value in state.items():
        if match := _SHARD_KEY.match(key):
            name, index = (match[1], match[2]) if match[1] else (match[3], match[4])
            shards.setdefault(name, {})[int(index)] = value
        else:
            out[key] = value
    if shards:
        stacked = [[parts[i] for i in sorted(parts)] for parts in shards.values()]
        out.update(gather_state_dict([dict(zip(shards, row, strict=True))
                                      for row in zip(*stacked, strict=True)], strategy))
    return out


def shard_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    rank: int,
    world_size: int,
    partition_strategy: PartitionStrategy = "mod",
) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s shard of a single-process output-layer state dict.

    Args:
        state_dict: a :class:`torchnce.NCELoss` / :class:`torchnce.SampledSoftmaxLoss` state
            dict: ``weight`` ``[C, D]``, ``bias`` ``[C]`` (optional), sampler buffers; shards
            ``weight.<i>`` of ``num_shards > 1`` are laid out by ``partition_strategy`` too.
        rank: r.
        world_size: P, the world size the shards are for.
        partition_strategy: ``"mod"`` or ``"div"``, the layout of the new shards.

    Returns:
        The state dict of rank ``r``'s sharded layer: ``weight`` ``[n_r, D]``, ``bias``
        ``[n_r]`` and a RowUpdate's accumulators of those rows (copies), the other entries as
        given.

    Raises:
        ValueError: no ``weight``, a bias of another length, bad sizes or strategy.

    Examples:
        >>> import torch
        >>> from torchnce.distributed import shard_state_dict
        >>> full = {"weight": torch.arange(5.0).view(5, 1), "bias": torch.zeros(5)}
        >>> shard_state_dict(full, 0, 2, "mod")["weight"].flatten().tolist()
        [0.0, 2.0, 4.0]
    """
    state = _merged(state_dict, partition_strategy)
    if "weight" not in state:
        raise ValueError(f"state_dict must hold a 'weight' table, got keys {sorted(state)}")
    num_classes = int(state["weight"].shape[0])
    for key in TABLES[1:]:
        if key in state and int(state[key].shape[0]) != num_classes:
            name = "a bias" if key == "bias" else f"an {key}"
            raise ValueError(f"state_dict must hold {name} of num_classes={num_classes} rows, "
                             f"got shape {tuple(state[key].shape)}")
    ids = shard_ids(num_classes, rank, world_size, partition_strategy)
    return {key: value.index_select(0, ids.to(value.device)) if key in TABLES else value
            for key, value in state.items()}


def gather_state_dict(
    shard_state_dicts: Sequence[Mapping[str, torch.Tensor]],
    partition_strategy: PartitionStrategy = "mod",
) -> dict[str, torch.Tensor]:
    """One single-process state dict from the state dicts of every rank, in rank order.

    The result loads into :class:`torchnce.NCELoss` / :class:`torchnce.SampledSoftmaxLoss`
    (``num_shards=1``) and, through :func:`shard_state_dict`, into a sharded layer of any
    world size and strategy.

    Args:
        shard_state_dicts: rank ``p``'s state dict at position ``p`` (e.g. ``torch.load`` of
            each rank's file); the entries other than ``weight``/``bias`` come from rank 0.
        partition_strategy: ``"mod"`` or ``"div"``, the layout they were saved with.

    Returns:
        ``weight`` ``[C, D]``, ``bias`` ``[C]`` and a RowUpdate's accumulators (when saved) in
        global class order, and rank 0's other entries.

    Raises:
        ValueError: no state dicts, shards whose sizes are not the strategy's layout.

    Examples:
        >>> import torch
        >>> from torchnce.distributed import gather_state_dict
        >>> shards = [{"weight": torch.tensor([[0.0], [2.0]])}, {"weight": torch.tensor([[1.0]])}]
        >>> gather_state_dict(shards, "mod")["weight"].flatten().tolist()
        [0.0, 1.0, 2.0]
    """
    strategy = cast(PartitionStrategy, check_choice("partition_strategy", partition_strategy,
                                                    STRATEGIES))
    if not shard_state_dicts:
        raise ValueError("shard_state_dicts must hold one state dict per rank, got none")
    world = len(shard_state_dicts)
    out = dict(shard_state_dicts[0])
    for key in TABLES:
        if key not in shard_state_dicts[0]:
            continue
        parts = [state[key] for state in shard_state_dicts]
        num_classes = sum(int(part.shape[0]) for part in parts)
        expected = shard_sizes(num_classes, world, strategy)
        if [int(part.shape[0]) for part in parts] != expected:
            raise ValueError(
                f"shard_state_dicts must hold {key} shards laid out by partition_strategy="
                f"{strategy!r} ({expected} rows), got {[int(p.shape[0]) for p in parts]}")
        table = parts[0].new_empty((num_classes, *parts[0].shape[1:]))
        for rank, part in enumerate(parts):
            ids = shard_ids(num_classes, rank, world, strategy).to(part.device)
            table.index_copy_(0, ids, part.to(table.device))
        out[key] = table
    return out
