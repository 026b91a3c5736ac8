"""A class-sharded sampled-softmax output layer over torch.distributed (gloo, on CPU).

What it shows: :class:`torchnce.distributed.ShardedSampledSoftmaxLoss` with its
``num_classes`` rows split over the ranks (TensorFlow's "mod" layout): every rank trains on
its own batch, the ranks draw the same candidates from the shared ``seed``, and the losses
they return, summed, are the single-process loss of the concatenated batch. A small encoder
is replicated on every rank; its gradient is the sum of the ranks' gradients (all-reduced
with SUM, not averaged, because each rank's loss is already its share of the global mean).
After training, the exact full softmax in eval mode and ``top_k`` over all classes; then the
shards are gathered into one state dict (:func:`torchnce.distributed.gather_state_dict`)
that loads into a single-process :class:`torchnce.SampledSoftmaxLoss`, whose exact loss on
the concatenated batch is the sharded one.

Run (two processes on one machine)::

    torchrun --nproc_per_node 2 examples/distributed_layer.py           # 1,000 steps
    torchrun --nproc_per_node 2 examples/distributed_layer.py --quick   # 60 steps

Every rank prints ``rank <r>: step <n> loss <global loss>`` (the same number on every rank),
``rank <r>: full loss <sharded> single-process <gathered>`` and its top-1 accuracy.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.distributed as dist
from torch import nn

import torchnce
from torchnce.distributed import ShardedSampledSoftmaxLoss, gather_state_dict

CLASSES, DIM, SAMPLED, BATCH = 20000, 32, 256, 128  # BATCH per rank


def batch(prototypes: torch.Tensor, generator: torch.Generator):
    """Labels with a Zipfian frequency (ids sorted by it, as the log-uniform sampler
    assumes) and inputs near their class's prototype."""
    labels = torchnce.LogUniformSampler(CLASSES).sample(
        torch.zeros(1, 1, dtype=torch.long), BATCH, unique=False, generator=generator
    ).sampled_candidates
    return prototypes[labels] + 0.5 * torch.randn(BATCH, DIM, generator=generator), labels


def say(rank: int, text: str) -> None:
    """One line in one write, so the lines of the ranks (one shared stdout) never interleave."""
    sys.stdout.write(f"rank {rank}: {text}\n")
    sys.stdout.flush()


def global_sum(value: torch.Tensor) -> torch.Tensor:
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 steps instead of 1,000")
    args = parser.parse_args()
    steps = 60 if args.quick else 1000
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)  # the same prototypes, encoder and initial shards on every rank
    prototypes = torch.randn(CLASSES, DIM)
    encoder = nn.Linear(DIM, DIM)
    layer = ShardedSampledSoftmaxLoss(CLASSES, DIM, SAMPLED, seed=0, timeout=60)
    say(rank, f"{len(layer.shard_ids()):,} of {CLASSES:,} classes "
              f"(ids {layer.shard_ids()[:3].tolist()}, ...)")
    optimizer = torch.optim.Adagrad([*encoder.parameters(), *layer.parameters()], lr=0.1)
    generator = torch.Generator().manual_seed(1 + rank)  # each rank its own data

    for step in range(1, steps + 1):
        inputs, labels = batch(prototypes, generator)
        loss = layer(encoder(inputs), labels)  # this rank's share of the global mean
        optimizer.zero_grad()
        loss.backward()
        for p in encoder.parameters():  # the replicated encoder: sum the ranks' gradients
            dist.all_reduce(p.grad)
        optimizer.step()
        if step % (steps // 4) == 0 or step == 1:
            say(rank, f"step {step} loss {global_sum(loss).item():.6f}")

    inputs, labels = batch(prototypes, torch.Generator().manual_seed(100 + rank))
    layer.eval()
    with torch.no_grad():
        features = encoder(inputs)
        full = global_sum(layer(features, labels))  # exact softmax over all classes
        _, ids = layer.top_k(features, 1)
        correct = global_sum((ids[:, 0] == labels).sum())

        # One single-process layer from the shards, scored on the concatenated batch.
        shards: list[dict[str, torch.Tensor]] = [{} for _ in range(world)]
        dist.all_gather_object(shards, layer.state_dict())
        single = torchnce.SampledSoftmaxLoss(CLASSES, DIM, SAMPLED)
        single.load_state_dict(gather_state_dict(shards, "mod"))
        everyone = [torch.empty_like(features) for _ in range(world)]
        every_label = [torch.empty_like(labels) for _ in range(world)]
        dist.all_gather(everyone, features)
        dist.all_gather(every_label, labels)
        reference = single.eval()(torch.cat(everyone), torch.cat(every_label))
    say(rank, f"full loss {full.item():.6f} single-process {reference.item():.6f} "
              f"(uniform: {math.log(CLASSES):.4f})")
    say(rank, f"top-1 accuracy {correct.item() / (world * BATCH):.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
