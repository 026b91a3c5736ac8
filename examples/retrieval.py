"""Two-tower retrieval with in-batch negatives, the log-Q correction and mixed negatives.

What it shows: a query tower (an MLP over query features) and an item tower (an embedding
per item) trained on synthetic data with a hidden structure, where the item a query leads
to is drawn with probability proportional to ``popularity(item) · exp(affinity)`` and the
popularity is Zipfian. Three losses, the same model and batches:

* :func:`torchnce.info_nce_loss` with in-batch negatives and no correction: popular items,
  over-represented among the negatives, are pushed down, so the model under-ranks them;
* the same with the log-Q correction, ``log_q`` from a
  :class:`torchnce.StreamingFrequencyEstimator` that learns each item's per-batch
  probability from the stream of batches (Yi et al. 2019);
* :func:`torchnce.mixed_negatives_loss`: the in-batch negatives plus items drawn uniformly
  from the whole catalogue, each source with its own correction (Yang et al. 2020).

Duplicate items in a batch are masked (``key_ids``). The script prints recall@10 on
held-out queries for each (the share of queries whose observed item is among the ten best
scored), next to two references: always recommending the ten most popular items, and the
true model that generated the data.

Run::

    python examples/retrieval.py           # 3,000 steps per loss, about a minute
    python examples/retrieval.py --quick   # 200 steps per loss, a few seconds
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import torchnce

LATENT, FEATURES, DIM, BATCH, SAMPLED = 8, 16, 32, 256, 256


def make_data(num_items: int, num_queries: int, generator: torch.Generator):
    """Queries with features ``x = A u + noise``, items with latent vectors ``v``; the item of
    a query is drawn from ``softmax(2 u·v / √LATENT + log popularity)``, popularity ∝ 1/rank.

    Returns the features, the items, the true logits of the last (at most) 10,000 queries
    and the log popularity."""
    item_latent = torch.randn(num_items, LATENT, generator=generator)
    ranks = torch.randperm(num_items, generator=generator) + 1
    log_popularity = F.log_softmax(-ranks.double().log(), 0).float()
    query_latent = torch.randn(num_queries, LATENT, generator=generator)
    mixing = torch.randn(LATENT, FEATURES, generator=generator) / math.sqrt(LATENT)
    features = query_latent @ mixing + 0.1 * torch.randn(num_queries, FEATURES,
                                                         generator=generator)
    items, true_logits = [], torch.empty(0)
    for chunk in query_latent.split(10000):  # bounded memory: [10000, num_items] at a time
        true_logits = 2 * chunk @ item_latent.T / math.sqrt(LATENT) + log_popularity
        items.append(torch.multinomial(true_logits.softmax(1), 1, generator=generator))
    return features, torch.cat(items).squeeze(1), true_logits, log_popularity


class TwoTower(nn.Module):
    def __init__(self, num_items: int):
        super().__init__()
        self.query = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, DIM))
        self.item = nn.Embedding(num_items, DIM)


def recall_at_10(scores: torch.Tensor, items: torch.Tensor) -> float:
    return (scores.topk(10, dim=1).indices == items[:, None]).any(1).float().mean().item()


def train(kind: str, features, items, num_items: int, steps: int) -> TwoTower:
    torch.manual_seed(0)
    model = TwoTower(num_items)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    estimator = torchnce.StreamingFrequencyEstimator(num_items, alpha=0.01)
    generator = torch.Generator().manual_seed(1)  # the same batches for every loss
    for _ in range(steps):
        rows = torch.randint(len(items), (BATCH,), generator=generator)
        ids = items[rows]
        query, key = model.query(features[rows]), model.item(ids)
        estimator.update(ids)
        log_q = estimator.log_probability(ids)
        if kind == "in-batch, no log-Q":
            loss = torchnce.info_nce_loss(query, key, key_ids=ids)
        elif kind == "in-batch + log-Q":
            loss = torchnce.info_nce_loss(query, key, key_ids=ids, log_q=log_q)
        else:
            sampled = torch.randint(num_items, (SAMPLED,), generator=generator)
            loss = torchnce.mixed_negatives_loss(
                query, key, model.item(sampled), batch_log_q=log_q,
                sampled_log_q=torch.full((SAMPLED,), -math.log(num_items)),
                key_ids=ids, sampled_ids=sampled)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@torch.no_grad()
def scores(model: TwoTower, features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query with every item, as the losses score them."""
    query = F.normalize(model.query(features), dim=1)
    return query @ F.normalize(model.item.weight, dim=1).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 steps per loss")
    args = parser.parse_args()
    num_items, num_train, steps = (1000, 20000, 200) if args.quick else (5000, 100000, 3000)

    generator = torch.Generator().manual_seed(0)
    features, items, true_logits, log_popularity = make_data(num_items, num_train + 5000,
                                                             generator)
    test = slice(num_train, None)
    print(f"{num_items:,} items, {num_train:,} training queries, 5,000 held-out, "
          f"{steps:,} steps of {BATCH}")
    popular = log_popularity.expand(5000, -1)
    print(f"recall@10 most popular: {recall_at_10(popular, items[test]):.3f}")
    truth = true_logits[-5000:]
    print(f"recall@10 true model: {recall_at_10(truth, items[test]):.3f}")
    for kind in ("in-batch, no log-Q", "in-batch + log-Q", "mixed negatives + log-Q"):
        model = train(kind, features[:num_train], items[:num_train], num_items, steps)
        print(f"recall@10 {kind}: {recall_at_10(scores(model, features[test]), items[test]):.3f}")


if __name__ == "__main__":
    main()
