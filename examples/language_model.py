"""A next-word language model trained with sampled softmax, evaluated with the exact softmax.

What it shows: :class:`torchnce.SampledSoftmaxLoss` as the output layer of a small
fixed-window neural language model (Bengio et al. 2003: the embeddings of the previous four
words, concatenated, through one tanh layer) on the King James Bible that ships inside the
package. In training mode the module computes the sampled softmax over ``num_sampled``
log-uniform candidates; after ``.eval()`` the same call computes the exact cross entropy
over every word, so held-out perplexity needs no other code. A baseline of the same model
is trained for the same number of steps with the full softmax
(``torch.nn.functional.cross_entropy`` over all classes); the script prints both held-out
perplexities and the time per training step of each.

Run::

    python examples/language_model.py           # 3,000 steps each, about five minutes
    python examples/language_model.py --quick   # 60 steps each, a few seconds

It prints ``sampled softmax: perplexity <p>, <t> ms/step`` and ``full softmax: perplexity
<p>, <t> ms/step`` (and that the module's exact eval loss equals ``cross_entropy``).
On a small or busy CPU, ``OMP_NUM_THREADS=1`` is often faster (the steps are small).
"""

from __future__ import annotations

import argparse
import collections
import lzma
import math
import re
import time

import torch
import torch.nn.functional as F
from torch import nn

import torchnce
import torchnce.datasets

CONTEXT = 4  # previous words seen by the model


def read_ids() -> tuple[torch.Tensor, int]:
    """The shipped corpus as word ids by decreasing frequency (what the log-uniform sampler
    assumes), and the vocabulary size: every distinct run of lower-case letters."""
    path = torchnce.datasets.kjv_path()
    words = re.findall(r"[a-z]+", lzma.decompress(path.read_bytes()).decode("utf-8").lower())
    index = {w: i for i, (w, _) in enumerate(collections.Counter(words).most_common())}
    return torch.tensor([index[w] for w in words]), len(index)


class WindowLM(nn.Module):
    """Embeddings of the previous ``CONTEXT`` words → tanh layer → an output layer that owns
    the ``[V, hidden]`` class embeddings (trained by sampled or full softmax)."""

    def __init__(self, vocabulary: int, num_sampled: int, dim: int = 64, hidden: int = 128):
        super().__init__()
        # Sparse gradients: the rows looked up (embedding) or sampled (output layer) only.
        # The full softmax touches every output row, so its gradient there stays dense.
        self.embedding = nn.Embedding(vocabulary, dim, sparse=True)
        self.hidden = nn.Linear(CONTEXT * dim, hidden)
        self.output = torchnce.SampledSoftmaxLoss(vocabulary, hidden, num_sampled,
                                                  sparse_grad=True)

    def features(self, context: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hidden(self.embedding(context).flatten(1)))


def sampled_loss(model: WindowLM, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return model.output(model.features(context), target)  # sampled in train(), exact in eval()


def full_loss(model: WindowLM, context: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model.output.logits(model.features(context)), target)


def train(model: WindowLM, loss_fn, windows: torch.Tensor, steps: int, batch: int) -> float:
    """Adagrad on random batches of windows; returns the median milliseconds per step.

    Adagrad leaves a row with a zero gradient unchanged, so its sparse update (the rows
    touched) is the dense one, and both models follow the same algorithm."""
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)  # the same batches for both models
    times = []
    for _ in range(steps):
        rows = windows[torch.randint(len(windows), (batch,), generator=generator)]
        start = time.perf_counter()
        loss = loss_fn(model, rows[:, :CONTEXT], rows[:, CONTEXT])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


@torch.no_grad()
def perplexity(model: WindowLM, windows: torch.Tensor, batch: int = 2048) -> float:
    """exp of the mean exact cross entropy: the module's loss in eval mode, over all words."""
    model.eval()
    total = sum(sampled_loss(model, w[:, :CONTEXT], w[:, CONTEXT]).item() * len(w)
                for w in windows.split(batch))
    model.train()
    return math.exp(total / len(windows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 steps, 10,000 held-out words")
    args = parser.parse_args()
    torch.sparse.check_sparse_tensor_invariants.disable()  # opt out explicitly: no warning
    steps, batch, num_sampled = (60, 256, 256) if args.quick else (3000, 256, 256)

    ids, vocabulary = read_ids()
    windows = ids.unfold(0, CONTEXT + 1, 1)  # [N - CONTEXT, CONTEXT + 1]: context, target
    split = int(0.9 * len(windows))
    train_windows, held_out = windows[:split], windows[split:]
    if args.quick:
        held_out = held_out[:10000]
    print(f"{len(ids):,} words, vocabulary {vocabulary:,}, {len(held_out):,} held-out words, "
          f"{steps:,} steps of {batch}, num_sampled={num_sampled}")

    results = {}
    for name, loss_fn in (("sampled softmax", sampled_loss), ("full softmax", full_loss)):
        torch.manual_seed(0)  # the same initial parameters for both models
        model = WindowLM(vocabulary, num_sampled)
        ms = train(model, loss_fn, train_windows, steps, batch)
        results[name] = model
        print(f"{name}: perplexity {perplexity(model, held_out):.1f}, {ms:.2f} ms/step")

    model, sample = results["sampled softmax"], held_out[:512]
    model.eval()
    with torch.no_grad():
        exact = sampled_loss(model, sample[:, :CONTEXT], sample[:, CONTEXT])
        reference = full_loss(model, sample[:, :CONTEXT], sample[:, CONTEXT])
    print(f"eval loss {exact.item():.6f} = cross_entropy {reference.item():.6f}")


if __name__ == "__main__":
    main()
