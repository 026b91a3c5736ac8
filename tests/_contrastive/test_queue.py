"""KeyQueue: a FIFO of past keys, ids and log-Q, used as extra negatives.

Oracles: a Python list of the last C rows (the FIFO's definition); the loop reference
``retrieval_oracle.mixed`` for mixed_negatives_loss over the queue; pytorch-metric-learning's
``CrossBatchMemory`` (skipped when it is not installed).
"""

from __future__ import annotations

import math

import pytest
import retrieval_oracle as oracle
import torch

import torchnce
from reference.contrastive import embeddings, log_probs

C, B, D = 7, 3, 4


def batch(step: int, size: int = B) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (embeddings(size, D, seed=step, dtype=torch.float32),
            torch.arange(size) + 10 * step, log_probs(size, seed=step, dtype=torch.float32))


def stored(queue: torchnce.KeyQueue) -> set[tuple[int, tuple[float, ...], float]]:
    return {(int(i), tuple(k.tolist()), float(q))
            for k, i, q in zip(queue.keys, queue.ids, queue.log_q, strict=True)}


def test_keeps_the_last_capacity_rows():
    queue, history = torchnce.KeyQueue(C, D), []
    for step in range(5):
        k, ids, lq = batch(step)
        queue.enqueue(k, ids, log_q=lq)
        history += [(int(i), tuple(r.tolist()), float(q - math.log(B)))
                    for r, i, q in zip(k, ids, lq, strict=True)]
        assert len(queue) == min(len(history), C)
        assert stored(queue) == set(history[-C:])


def test_a_batch_larger_than_the_queue_keeps_its_last_rows():
    queue = torchnce.KeyQueue(C, D)
    k, ids, lq = batch(1, size=C + 2)
    queue.enqueue(k, ids, log_q=lq)
    assert sorted(queue.ids.tolist()) == ids[-C:].tolist()
    torch.testing.assert_close(queue.log_q.sort().values,
                               (lq[-C:] - math.log(C + 2)).sort().values)


def test_keys_are_detached():
    queue = torchnce.KeyQueue(C, D)
    k = embeddings(B, D, dtype=torch.float32).requires_grad_()
    queue.enqueue(k * 2, torch.arange(B), log_q=torch.zeros(B))
    assert not queue.keys.requires_grad


def test_state_dict_round_trip():
    queue = torchnce.KeyQueue(C, D)
    for step in range(3):
        k, ids, lq = batch(step)
        queue.enqueue(k, ids, log_q=lq)
    copy = torchnce.KeyQueue(C, D)
    copy.load_state_dict(queue.state_dict())
    assert stored(copy) == stored(queue) and len(copy) == len(queue)
    k, ids, lq = batch(9)
    queue.enqueue(k, ids, log_q=lq)
    copy.enqueue(k, ids, log_q=lq)  # the write position travelled too
    assert stored(copy) == stored(queue)
    assert {"key_memory", "id_memory", "log_q_memory", "_extra_state"} <= set(
        queue.state_dict())


def test_reset_and_repr():
    queue = torchnce.KeyQueue(C, D)
    queue.enqueue(*batch(0)[:2], log_q=batch(0)[2])
    assert repr(queue) == f"KeyQueue(capacity={C}, dim={D}, size={B})"
    queue.reset()
    assert len(queue) == 0 and queue.keys.shape == (0, D)


def test_mixed_negatives_over_the_queue_masks_duplicates():
    """The queue as sampled keys: a queued copy of row i's item is masked for row i; the
    stored log (p / B) plus the loss's log M is log((M / B) p) (test above: the stored
    values are log p - log B)."""
    queue = torchnce.KeyQueue(C, D, dtype=torch.float64)
    for step in range(3):
        k, ids, lq = batch(step)
        queue.enqueue(k.double(), ids, log_q=lq.double())
    q, k = embeddings(B, D, seed=20), embeddings(B, D, seed=21)
    kids = torch.tensor([10, 21, 99])  # rows 0 and 1 have copies in the queue
    blq = log_probs(B, seed=22)
    loss = torchnce.mixed_negatives_loss(q, k, queue.keys, batch_log_q=blq,
                                         sampled_log_q=queue.log_q, key_ids=kids,
                                         sampled_ids=queue.ids, reduction="none")
    want = oracle.mixed(q, k, queue.keys, batch_log_q=blq, sampled_log_q=queue.log_q,
                        key_ids=kids, sampled_ids=queue.ids, temperature=0.1, normalize=True)
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("unique", [False, True])
def test_cross_batch_memory_parity(unique):
    """PML's CrossBatchMemory(SupConLoss, memory_size=C + B) with enqueue_mask (queries
    q, enqueued keys k) is, at every step, SupCon over [k; the queue before the step] with a
    KeyQueue of C rows; with distinct ids it is mixed_negatives_loss without correction."""
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    memory = pml.CrossBatchMemory(pml.SupConLoss(temperature=0.1), D, memory_size=C + B)
    queue, g = torchnce.KeyQueue(C, D), torch.Generator().manual_seed(3)
    mask = torch.cat([torch.zeros(B), torch.ones(B)]).bool()
    for step in range(5):
        q, k = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
        ids = torch.arange(B) + B * step if unique else torch.randint(0, 4, (B,), generator=g)
        want = memory(torch.cat([q, k]), torch.cat([ids, ids]), enqueue_mask=mask)
        got = torchnce.supervised_contrastive_loss(
            q, ids, temperature=0.1, ref_embeddings=torch.cat([k, queue.keys]),
            ref_labels=torch.cat([ids, queue.ids]))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # PML's float32 path
        if unique:
            m = len(queue)
            mixed = torchnce.mixed_negatives_loss(
                q, k, queue.keys, batch_log_q=torch.zeros(B),
                sampled_log_q=torch.full((m,), -math.log(max(m, 1))), temperature=0.1)
            torch.testing.assert_close(mixed, want, rtol=1e-5, atol=1e-5)
        queue.enqueue(k, ids, log_q=torch.zeros(B))


def good_queue() -> torchnce.KeyQueue:
    queue = torchnce.KeyQueue(C, D)
    k, ids, lq = batch(0)
    queue.enqueue(k, ids, log_q=lq)
    return queue


def unchanged(call):
    """Run a failing call and check that the queue did not change."""
    queue = good_queue()
    before = {name: t.clone() for name, t in queue.state_dict().items() if name != "_extra_state"}
    extra = queue.get_extra_state()
    with pytest.raises((TypeError, ValueError)) as info:
        call(queue)
    after = queue.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert queue.get_extra_state() == extra
    return str(info.value)


def test_keys_of_another_dim():
    message = unchanged(lambda qu: qu.enqueue(torch.zeros(B, D + 1), torch.arange(B),
                                              log_q=torch.zeros(B)))
    assert message.startswith(f"keys must be [B, D] = [B, {D}], got shape ({B}, {D + 1})")


def test_keys_of_another_dtype():
    message = unchanged(lambda qu: qu.enqueue(torch.zeros(B, D, dtype=torch.float64),
                                              torch.arange(B), log_q=torch.zeros(B)))
    assert message.startswith("keys must have the queue's dtype torch.float32")


def test_ids_wrong_shape_or_type():
    message = unchanged(lambda qu: qu.enqueue(torch.zeros(B, D), torch.arange(B + 1),
                                              log_q=torch.zeros(B)))
    assert message.startswith(f"ids must be [B] = [{B}]")
    message = unchanged(lambda qu: qu.enqueue(torch.zeros(B, D), torch.zeros(B),
                                              log_q=torch.zeros(B)))
    assert message.startswith("ids must be an integer tensor")


def test_log_q_bad_values():
    message = unchanged(lambda qu: qu.enqueue(torch.zeros(B, D), torch.arange(B),
                                              log_q=torch.tensor([0.0, 0.5, -1.0])))
    assert message.startswith("log_q must hold log-probabilities")


@pytest.mark.parametrize("name", ["capacity", "dim"])
def test_bad_sizes(name):
    sizes = {"capacity": C, "dim": D}
    with pytest.raises(ValueError, match=rf"^{name} must be >= 1, got 0"):
        torchnce.KeyQueue(**{**sizes, name: 0})
    with pytest.raises(TypeError, match=rf"^{name} must be an int"):
        torchnce.KeyQueue(**{**sizes, name: 2.0})
