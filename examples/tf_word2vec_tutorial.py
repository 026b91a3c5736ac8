"""TensorFlow's word2vec tutorial (``word2vec_basic.py``), ported to PyTorch with torchnce.

What it shows: the skip-gram model of the TensorFlow tutorial (window 1, both neighbours of
every word, batches of 128, 128-dimensional embeddings, plain SGD at learning rate 1.0) with
its loss, ``tf.nn.nce_loss`` with ``num_sampled=64``, written exactly as in TensorFlow: the
same function name and keyword arguments, ``tf.`` replaced by ``torchnce.``. Everything around
the call is ordinary PyTorch (``nn.Embedding``, ``nn.Parameter``, ``torch.optim.SGD``). The
corpus is the King James Bible that ships inside the package; as in the tutorial the
vocabulary is sorted by frequency (id 0 is ``UNK``), which is what the default log-uniform
sampler of ``nce_loss`` assumes.

Run::

    python examples/tf_word2vec_tutorial.py           # 100,001 steps, as the tutorial
    python examples/tf_word2vec_tutorial.py --quick   # 1,001 steps, a few seconds

It prints the average loss every 2,000 steps (250 with ``--quick``), the nearest neighbours
of a few words by cosine similarity, and ``final loss: <average of the last 2,000 steps>``
(of all 1,001 with ``--quick``).
On a small or busy CPU, ``OMP_NUM_THREADS=1`` is often faster (the steps are tiny).
"""

from __future__ import annotations

import argparse
import collections
import lzma
import math
import re
import time

import torch
from torch import nn

import torchnce
import torchnce.datasets

VALID_WORDS = ("god", "king", "said", "water", "three", "house", "day", "son")


def read_words() -> list[str]:
    """The shipped corpus, lower-cased, as a list of words (runs of letters)."""
    path = torchnce.datasets.kjv_path()
    text = lzma.decompress(path.read_bytes()).decode("utf-8")
    return re.findall(r"[a-z]+", text.lower())


def build_dataset(words: list[str], n_words: int) -> tuple[torch.Tensor, list[str]]:
    """The tutorial's ``build_dataset``: ids by decreasing frequency, 0 for ``UNK``."""
    vocabulary = ["UNK"] + [w for w, _ in collections.Counter(words).most_common(n_words - 1)]
    index = {w: i for i, w in enumerate(vocabulary)}
    data = torch.tensor([index.get(w, 0) for w in words])
    return data, vocabulary


def skip_gram_pairs(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (word, neighbour) pair of ``skip_window=1, num_skips=2``, in corpus order."""
    centers = data[1:-1].repeat_interleave(2)
    contexts = torch.stack([data[:-2], data[2:]], dim=1).flatten()
    return centers, contexts


def nearest(embeddings: torch.Tensor, vocabulary: list[str], word: str, k: int = 8) -> str:
    """The ``k`` words of highest cosine similarity to ``word``, as the tutorial prints them."""
    normalized = nn.functional.normalize(embeddings, dim=1)
    wid = vocabulary.index(word)
    similarity = normalized @ normalized[wid]
    ids = similarity.topk(k + 1).indices[1:].tolist()  # the first is the word itself
    return f"Nearest to {word}: " + ", ".join(vocabulary[i] for i in ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,001 steps instead of 100,001")
    args = parser.parse_args()
    torch.manual_seed(0)

    vocabulary_size = 10000
    batch_size = 128
    embedding_size = 128  # dimension of the embedding vector
    num_sampled = 64  # number of negative examples to sample
    num_steps = 1001 if args.quick else 100001
    report_every = 250 if args.quick else 2000

    data, vocabulary = build_dataset(read_words(), vocabulary_size)
    centers, contexts = skip_gram_pairs(data)
    print(f"{len(data):,} words, vocabulary {vocabulary_size:,}, {len(centers):,} pairs")

    # The tutorial's variables: embeddings uniform in [-1, 1), NCE weights from a normal
    # truncated at two standard deviations of 1/sqrt(embedding_size), zero biases.
    # sparse=True: the embedding's gradient is its looked-up rows only, as TensorFlow's
    # IndexedSlices (the dense [vocabulary_size, 128] gradient would triple the step time).
    embeddings = nn.Embedding(vocabulary_size, embedding_size, sparse=True)
    nn.init.uniform_(embeddings.weight, -1.0, 1.0)
    std = 1.0 / math.sqrt(embedding_size)
    nce_weights = nn.Parameter(
        nn.init.trunc_normal_(torch.empty(vocabulary_size, embedding_size), std=std,
                              a=-2 * std, b=2 * std))
    nce_biases = nn.Parameter(torch.zeros(vocabulary_size))
    optimizer = torch.optim.SGD([embeddings.weight, nce_weights, nce_biases], lr=1.0)

    average_loss, last_losses, start = 0.0, collections.deque(maxlen=2000), time.perf_counter()
    for step in range(num_steps):
        offset = step * batch_size % (len(centers) - batch_size)
        train_inputs = centers[offset:offset + batch_size]
        train_labels = contexts[offset:offset + batch_size].unsqueeze(1)  # [batch_size, 1]
        embed = embeddings(train_inputs)

        loss = torch.mean(
            torchnce.nce_loss(weights=nce_weights,
                              biases=nce_biases,
                              labels=train_labels,
                              inputs=embed,
                              num_sampled=num_sampled,
                              num_classes=vocabulary_size))

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        average_loss += loss.item()
        last_losses.append(loss.item())
        if step % report_every == 0:
            if step > 0:
                average_loss /= report_every
            print(f"Average loss at step {step}: {average_loss:.4f}")
            average_loss = 0.0

    elapsed = time.perf_counter() - start
    print(f"{num_steps:,} steps in {elapsed:.1f} s ({1e3 * elapsed / num_steps:.2f} ms/step)")
    with torch.no_grad():
        for word in VALID_WORDS:
            print(nearest(embeddings.weight, vocabulary, word))
    print(f"final loss: {sum(last_losses) / len(last_losses):.4f}")


if __name__ == "__main__":
    main()
