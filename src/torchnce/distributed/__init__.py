"""torchnce.distributed: the output layer with its classes sharded over torch.distributed ranks.

Each rank owns the shard of the output embeddings that TensorFlow's ``partition_strategy``
("mod" or "div") assigns to it and trains on its own batch; the sampled losses, their
gradients, the exact full losses and ``top_k`` equal those of the single-process layer on the
concatenated batch. The same code runs on gloo (CPU) and NCCL (GPU).

A training step fetches the rows its labels and candidates need by one of two exchanges
(``exchange=``): "padded" (the default with dense gradients) sends fixed-size blocks whose
split sizes the host knows from shapes and a batch capacity agreed once, so the step reads
nothing back from the device, but every rank answers every label row — ``(P−1)·m·T`` rows per
rank and direction instead of ``(P−1)/P·b·T``, 4× the bytes at P = 8 and 23× at P = 64 in
docs/distributed.md's example; "variable" (the default with ``sparse_grad=True``) sends only
the rows asked for and reads per-owner counts on the host every step. See docs/distributed.md
for both exchanges, their traffic per step and when each is used.

``GatheredNegatives`` is the other use of the ranks in retrieval: ``info_nce_loss`` and
``mixed_negatives_loss`` whose in-batch negatives are every rank's keys, with the gradients
of the single-process loss on the concatenated batch.

May import: every private stage of torchnce (it reuses the layers' checks); never the app.
"""

from torchnce.distributed._base import ShardedOutputLayer
from torchnce.distributed._checkpoint import gather_state_dict, shard_ids, shard_state_dict
from torchnce.distributed._comm import CollectiveError
from torchnce.distributed._gathered import GatheredNegatives
from torchnce.distributed._modules import ShardedNCELoss, ShardedSampledSoftmaxLoss

__all__ = [
    "CollectiveError",
    "GatheredNegatives",
    "ShardedNCELoss",
    "ShardedOutputLayer",
    "ShardedSampledSoftmaxLoss",
    "gather_state_dict",
    "shard_ids",
    "shard_state_dict",
]
