"""Variable numbers of true labels: padded labels with a mask or a padding id, or ragged rows.

Every form becomes ``TrueLabels``: int64 ids ``[B, T]`` whose padded slots hold the valid id 0
(so lookups and samplers need no special case) and a bool mask of the real labels. The maths
then treats row ``b`` exactly as if it had been computed alone with its ``n_b`` real labels:
targets ``1/n_b`` on them, 0 on padding; padded logits replaced (never added to, so a padded
slot's expected count of 0 or NaN cannot leak) by the value of a removed hit; padded labels
never remove a sampled candidate as an accidental hit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from torchnce._common.checks import as_int_tensor, check_int


class TrueLabels(NamedTuple):
    """Validated true classes.

    Attributes:
        ids: int64 ``[B, T]``, ids in ``[0, C)``; padded slots hold 0.
        mask: bool ``[B, T]``, True for a real label; None when every slot is real.
    """

    ids: torch.Tensor
    mask: torch.Tensor | None


def is_ragged(labels: Any) -> bool:
    """Ragged labels are a Python list of 1-D tensors, one per row (an empty list too)."""
    return isinstance(labels, list) and all(
        isinstance(row, torch.Tensor) and row.dim() == 1 for row in labels)


def _padded(labels: Any, num_true: int, inputs: torch.Tensor) -> torch.Tensor:
    """``labels`` as int64 ``[B, T]`` (``[B]`` is accepted when ``num_true`` is 1)."""
    ids = as_int_tensor("labels", labels, device=inputs.device)
    if ids.dim() == 1 and num_true == 1:
        ids = ids.unsqueeze(1)
    if ids.dim() != 2 or ids.shape != (inputs.shape[0], num_true):
        raise ValueError(
            f"labels must have shape [batch_size={inputs.shape[0]}, num_true={num_true}], "
            f"got {tuple(ids.shape)}"
        )
    return ids.to(inputs.device)


def _ragged(rows: list[torch.Tensor], inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows as ids ``[B, T]`` (T the longest row, at least 1) and their mask."""
    if len(rows) != inputs.shape[0]:
        raise ValueError(f"labels must hold batch_size={inputs.shape[0]} rows when ragged "
                         f"(a list of 1-D tensors), got {len(rows)}")
    device = inputs.device
    # An empty row may be written torch.tensor([]) (float32): it holds no ids to check.
    values = [row.new_zeros(0, dtype=torch.long).to(device) if row.numel() == 0
              else as_int_tensor("labels", row).to(device) for row in rows]
    lengths = torch.tensor([v.numel() for v in values], dtype=torch.long, device=device)
    width = max([1, *(v.numel() for v in values)])
    mask = torch.arange(width, device=device) < lengths.unsqueeze(1)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    if values:
        ids[mask] = torch.cat(values)
    return ids, mask


def _check_mask(label_mask: Any, ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(label_mask, torch.Tensor) or label_mask.dtype != torch.bool:
        got = (label_mask.dtype if isinstance(label_mask, torch.Tensor)
               else type(label_mask).__name__)
        raise TypeError(f"label_mask must be a bool tensor [batch_size, num_true], got {got}; "
                        f"use label_mask.bool()")
    mask = label_mask.unsqueeze(1) if label_mask.dim() == 1 and ids.shape[1] == 1 else label_mask
    if mask.shape != ids.shape:
        raise ValueError(f"label_mask must have the shape of labels {list(ids.shape)}, got "
                         f"{tuple(label_mask.shape)}")
    return mask.to(ids.device)


def true_labels(
    labels: Any,
    num_true: int,
    inputs: torch.Tensor,
    *,
    label_mask: Any = None,
    padding_id: Any = None,
) -> TrueLabels:
    """Validate labels in any of the three forms (``num_true`` is ignored for ragged labels).

    The ids' range is the caller's to check (``check_all_in_range``), together with any other
    ids of the call, so that the call reads the device once.
    """
    if label_mask is not None and padding_id is not None:
        raise ValueError("label_mask and padding_id must not both be given, got both; pass one")
    if is_ragged(labels):
        if label_mask is not None or padding_id is not None:
            raise ValueError("labels must be a padded [batch_size, num_true] tensor when "
                             "label_mask or padding_id is given, got a ragged list of rows")
        ids, mask = _ragged(labels, inputs)
    else:
        ids = _padded(labels, num_true, inputs)
        mask = None
        if label_mask is not None:
            mask = _check_mask(label_mask, ids)
        elif padding_id is not None:
            mask = ids != check_int("padding_id", padding_id)
    if mask is not None:
        ids = torch.where(mask, ids, 0)
    return TrueLabels(ids, mask)


def hit_labels(labels: TrueLabels) -> torch.Tensor:
    """The ids that remove accidental hits: padded slots become -1, which no candidate is."""
    return labels.ids if labels.mask is None else torch.where(labels.mask, labels.ids, -1)


def true_targets(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T]`` targets ``1/n_b`` on a row's ``n_b`` real labels, 0 on padding and on rows
    without labels."""
    weights = mask.to(dtype)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
