"""What each sampled loss computes, described once: the three functions, the three modules
and the two sharded modules all read it from here."""

from __future__ import annotations

from typing import NamedTuple

from torchnce._common.types import LossKind


class LossSpec(NamedTuple):
    """A sampled loss.

    Attributes:
        name: the public function, e.g. ``"nce_loss"``.
        kind: ``"sigmoid"`` (a binary cross entropy per class) or ``"softmax"`` (over the row).
        subtract_log_q: whether the logits are corrected by the log expected counts.
        remove_accidental_hits: the default of ``remove_accidental_hits`` (TensorFlow's).
    """

    name: str
    kind: LossKind
    subtract_log_q: bool
    remove_accidental_hits: bool


NCE = LossSpec("nce_loss", "sigmoid", subtract_log_q=True, remove_accidental_hits=False)
SAMPLED_SOFTMAX = LossSpec("sampled_softmax_loss", "softmax", subtract_log_q=True,
                           remove_accidental_hits=True)
NEGATIVE_SAMPLING = LossSpec("negative_sampling_loss", "sigmoid", subtract_log_q=False,
                             remove_accidental_hits=False)
SPECS = {spec.name: spec for spec in (NCE, SAMPLED_SOFTMAX, NEGATIVE_SAMPLING)}
