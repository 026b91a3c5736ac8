"""torchnce.distributed: the output layer with its classes sharded over torch.distributed ranks.

Each rank owns the shard of the output embeddings that TensorFlow's ``partition_strategy``
("mod" or "div") assigns to it and trains on its own batch; the sampled losses, their
gradients, the exact full losses and ``top_k`` equal those of the single-process layer on the
concatenated batch. The same code runs on gloo (CPU) and NCCL (GPU). See docs/distributed.md
for the exchange and its traffic per step.

May import: every private stage of torchnce (it reuses the layers' checks); never the app.
"""

from torchnce.distributed._base import ShardedOutputLayer
from torchnce.distributed._checkpoint import gather_state_dict, shard_ids, shard_state_dict
from torchnce.distributed._comm import CollectiveError
from torchnce.distributed._modules import ShardedNCELoss, ShardedSampledSoftmaxLoss

__all__ = [
    "CollectiveError",
    "ShardedNCELoss",
    "ShardedOutputLayer",
    "ShardedSampledSoftmaxLoss",
    "gather_state_dict",
    "shard_ids",
    "shard_state_dict",
]
