"""The bindings of the native word2vec kernels (``word2vec.cpp``): checks, then one call.

* ``batches`` trains given examples one after the other, word2vec's own SGD (as word2vec.c
  and gensim do): each example's loss and gradients are those of the pure step
  (``torchnce._sampled.step.GraphFreeStep``, applied by the app's ``Word2Vec.step``) on a
  batch of that one example; a batch of ``batch_size`` examples only holds a learning rate.
* ``skipgram`` makes a chunk's skip-gram examples from its tokens and trains them by windows,
  each window one batch of the public loss.

Both are registered as custom ops (``torchnce::word2vec_batches`` and
``torchnce::word2vec_skipgram``, which mutate the two tables), so ``torch.compile`` sees one
op each; the app calls the plain functions, which skip the dispatcher (its first call in a
process costs about a second of imports, in every forked worker). Every argument is checked
here, ids included (one read per chunk, not per batch): the kernels trust them.
"""

from __future__ import annotations

import ctypes

import torch

from torchnce._common.checks import check_all_in_range
from torchnce._native.build import kernel

_P = ctypes.c_void_p
_I64 = ctypes.c_int64


_BATCHES = [_P, _P, _I64, _P, _I64, _P, _P, _P, _I64, _P, _P, ctypes.c_int, ctypes.c_int, _I64,
            _I64, _P, _P]
_SKIPGRAM = [_P, _P, _I64, _P, _P, _P, _I64, _P, _P, _P, _I64, _I64, ctypes.c_int, ctypes.c_int,
             ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_uint64, _I64,
             _P, _P]


def _check(name: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != dtype:
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name} must be a {dtype} tensor for the native kernel, got {got}")
    if t.device.type != "cpu" or not t.is_contiguous() or tuple(t.shape) != shape:
        raise ValueError(f"{name} must be a contiguous CPU tensor of shape {list(shape)}, got "
                         f"{tuple(t.shape)} on {t.device}")


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def batches(
    in_vec: torch.Tensor, out_vec: torch.Tensor, inputs: torch.Tensor,
    mask: torch.Tensor | None, labels: torch.Tensor, negatives: torch.Tensor,
    true_logq: torch.Tensor | None, neg_logq: torch.Tensor | None, lrs: torch.Tensor,
    softmax: bool, remove_hits: bool, batch_size: int,
) -> torch.Tensor:
    """SGD over ``N`` examples, one at a time, the learning rate ``lrs[b]`` for the examples of
    batch ``b`` (``batch_size`` each); returns the summed loss (float64).

    Args:
        in_vec: float32 ``[V, D]`` input vectors, updated in place.
        out_vec: float32 ``[V, D]`` output vectors (the loss's ``weights``), updated in place.
        inputs: int64 ``[N, W]``: each example's centre (``W = 1``) or context ids (CBOW).
        mask: bool ``[N, W]``, the real context slots (CBOW, at least one per row), or None.
        labels: int64 ``[N]`` true classes; negatives: int64 ``[N, K]``.
        true_logq: float32 ``[N]`` and neg_logq float32 ``[N, K]``: log expected counts to
            subtract (NCE, sampled softmax), or None (negative sampling).
        lrs: float32 ``[ceil(N / batch_size)]``, each batch's learning rate.
        softmax: the softmax cross entropy (else the sigmoid one).
        remove_hits: remove the last negative equal to the label (accidental hit).
        batch_size: examples per batch.
    """
    fn = kernel("torchnce_word2vec_batches", _BATCHES)
    vocab, dim = in_vec.shape
    n, width = inputs.shape
    k = negatives.shape[1] if negatives.dim() == 2 else -1
    _check("in_vec", in_vec, torch.float32, (vocab, dim))
    _check("out_vec", out_vec, torch.float32, (vocab, dim))
    _check("inputs", inputs, torch.int64, (n, width))
    _check("labels", labels, torch.int64, (n,))
    _check("negatives", negatives, torch.int64, (n, k))
    if mask is not None:
        _check("mask", mask, torch.bool, (n, width))
        if n and not bool(mask.any(dim=1).all()):
            raise ValueError("mask must mark at least one context id in every row")
    if (true_logq is None) != (neg_logq is None):
        raise ValueError("true_logq and neg_logq must be given together, got one of them")
    if true_logq is not None and neg_logq is not None:
        _check("true_logq", true_logq, torch.float32, (n,))
        _check("neg_logq", neg_logq, torch.float32, (n, k))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check("lrs", lrs, torch.float32, (-(-n // batch_size),))
    check_all_in_range((("inputs", inputs), ("labels", labels), ("negatives", negatives)),
                       vocab)
    loss = ctypes.c_double(0.0)
    fn(
        in_vec.data_ptr(), out_vec.data_ptr(), dim, inputs.data_ptr(), width,
        _pointer(None if mask is None else mask.view(torch.uint8)), labels.data_ptr(),
        negatives.data_ptr(), k, _pointer(true_logq), _pointer(neg_logq), int(softmax),
        int(remove_hits), n, batch_size, lrs.data_ptr(), ctypes.byref(loss))
    return torch.tensor(loss.value, dtype=torch.float64)


word2vec_batches = torch.library.custom_op(
    "torchnce::word2vec_batches", mutates_args=("in_vec", "out_vec"))(batches)


@word2vec_batches.register_fake
def _(in_vec: torch.Tensor, out_vec: torch.Tensor, inputs: torch.Tensor,
      mask: torch.Tensor | None, labels: torch.Tensor, negatives: torch.Tensor,
      true_logq: torch.Tensor | None, neg_logq: torch.Tensor | None, lrs: torch.Tensor,
      softmax: bool, remove_hits: bool, batch_size: int) -> torch.Tensor:
    return torch.empty((), dtype=torch.float64)


def skipgram(
    in_vec: torch.Tensor, out_vec: torch.Tensor, ids: torch.Tensor, lines: torch.Tensor,
    reach: torch.Tensor, threshold: torch.Tensor, alias: torch.Tensor, probs: torch.Tensor,
    num_sampled: int, log_q: bool, softmax: bool, remove_hits: bool, lr_first: float,
    lr_last: float, lr_floor: float, seed: int, share: int,
) -> torch.Tensor:
    """Skip-gram over one chunk of tokens, examples made and trained in one native call.

    Every centre ``ids[p]`` is the input of one example per word at distance
    ``d <= reach[p]`` on its line (``lines``), word2vec's reduced window, with that word as
    the label, in corpus order; each example's ``num_sampled`` negatives are drawn from the
    alias table ``(threshold, alias)`` of the sampler whose probabilities are ``probs``; the
    step is :func:`word2vec_batches`'s. Returns ``(summed loss, examples)`` as float64 ``[2]``.

    Args:
        in_vec, out_vec: float32 ``[V, D]`` tables, updated in place.
        ids, lines, reach: int64 ``[n]``: the chunk's tokens, their line numbers and each
            centre's reduced window (``1 <= reach <= window``).
        threshold, alias, probs: float64, int64 and float32 ``[V]``, as
            ``FixedUnigramSampler`` holds them.
        num_sampled: K negatives per example; log_q: subtract ``log(K · probs)``.
        softmax, remove_hits: as :func:`word2vec_batches`.
        lr_first, lr_last, lr_floor: the rate at the chunk's first and last position
            (linear in between), and its floor.
        seed: the negatives' random seed.
        share: how many consecutive examples of a window share one set of negatives (1: a set
            per example, word2vec's own; 0: the whole window, HogBatch).
    """
    fn = kernel("torchnce_word2vec_skipgram", _SKIPGRAM)
    vocab, dim = in_vec.shape
    n = ids.shape[0]
    _check("in_vec", in_vec, torch.float32, (vocab, dim))
    _check("out_vec", out_vec, torch.float32, (vocab, dim))
    for name, t in (("ids", ids), ("lines", lines), ("reach", reach)):
        _check(name, t, torch.int64, (n,))
    _check("threshold", threshold, torch.float64, (vocab,))
    _check("alias", alias, torch.int64, (vocab,))
    _check("probs", probs, torch.float32, (vocab,))
    if num_sampled < 1:
        raise ValueError(f"num_sampled must be >= 1, got {num_sampled}")
    if share < 0:
        raise ValueError(f"share must be >= 0 (0: the whole window), got {share}")
    check_all_in_range((("ids", ids), ("alias", alias)), vocab)
    if n and int(reach.min()) < 0:
        raise ValueError(f"reach must be >= 0, got {int(reach.min())}")
    loss, count = ctypes.c_double(0.0), ctypes.c_int64(0)
    fn(in_vec.data_ptr(), out_vec.data_ptr(), dim, ids.data_ptr(), lines.data_ptr(),
       reach.data_ptr(), n, threshold.data_ptr(), alias.data_ptr(), probs.data_ptr(), vocab,
       num_sampled, int(log_q), int(softmax), int(remove_hits), lr_first, lr_last, lr_floor,
       seed % 2**64, share, ctypes.byref(loss), ctypes.byref(count))
    return torch.tensor([loss.value, float(count.value)], dtype=torch.float64)


word2vec_skipgram = torch.library.custom_op(
    "torchnce::word2vec_skipgram", mutates_args=("in_vec", "out_vec"))(skipgram)


@word2vec_skipgram.register_fake
def _(in_vec: torch.Tensor, out_vec: torch.Tensor, ids: torch.Tensor, lines: torch.Tensor,
      reach: torch.Tensor, threshold: torch.Tensor, alias: torch.Tensor, probs: torch.Tensor,
      num_sampled: int, log_q: bool, softmax: bool, remove_hits: bool, lr_first: float,
      lr_last: float, lr_floor: float, seed: int, share: int) -> torch.Tensor:
    return torch.empty(2, dtype=torch.float64)
