"""The word2vec epochs: chunks of the corpus, word2vec's learning-rate decay, Hogwild workers.

The work is a list of chunks (about 50,000 tokens each, every epoch). A chunk is subsampled,
turned into shuffled examples and trained batch by batch; its random draws come from its own
seed, so they do not depend on which worker runs it. With ``threads > 1`` that many forked
worker *processes* take the chunks in order, each the next one left, and update the two
tables in shared memory without locks (Hogwild, as word2vec and gensim do with threads):
processes, because Python threads would serialise on the interpreter lock between torch
calls. On other systems than Linux, or with one thread, everything runs in the calling
process.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from torchnce.app.word2vec.corpus import Corpus, keep_probability, subsample
from torchnce.app.word2vec.model import Word2Vec, Word2VecConfig, examples

CHUNK_TOKENS = 50_000
_MIN_LR_FRACTION = 1e-4  # word2vec's floor: the rate never drops below lr0 · 1e-4
_JOIN_TIMEOUT_S = 30.0
_BATCHES_PER_CALL = 16  # batches trained per call between checks for Ctrl-C


@dataclass
class TrainLog:
    """What a run did: the loss curve (one point per chunk) and the work counters."""

    words_seen: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    examples: int = 0
    words: int = 0
    interrupted: bool = False
    diverged: bool = False


class WorkerError(RuntimeError):
    """A worker process failed; the message holds its traceback."""


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system.

    By default glibc unmaps or trims freed blocks of a few MB, so training steps page-fault
    their ``[B, 6, D]`` temporaries back in (zeroed by the kernel): this halves the page
    faults of a word2vec run. A process-wide setting, so the command line calls it, not the
    library.
    Returns whether it took effect (glibc on Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    # Older glibc caps the mmap threshold at 32 MB; fall back to that.
    mmap_ok = libc.mallopt(m_mmap_threshold, 1 << 30) or libc.mallopt(m_mmap_threshold, 32 << 20)
    trim_ok = libc.mallopt(m_trim_threshold, 1 << 30)
    return bool(mmap_ok and trim_ok)


def _block_sigint() -> bool:
    """Block SIGINT in this thread (where the platform can); returns whether it did."""
    if not hasattr(signal, "pthread_sigmask"):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    return True


def _unblock_sigint(blocked: bool) -> None:
    if blocked and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _can_fork() -> bool:
    """Forked workers on Linux only (macOS lists ``fork`` but torch is not fork-safe there)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class Trainer:
    """Trains a :class:`Word2Vec` on a corpus; ``run(on_chunk)`` calls
    ``on_chunk(words_done, mean_loss)`` after every chunk."""

    def __init__(self, corpus: Corpus, config: Word2VecConfig) -> None:
        self.corpus, self.config = corpus, config
        self.workers = config.threads if _can_fork() else 1
        self.model = Word2Vec(corpus, config, shared=self.workers > 1)
        self.keep = keep_probability(corpus.counts, config.subsample)
        n = corpus.ids.numel()
        self.plan = [start for _ in range(config.epochs) for start in range(0, n, CHUNK_TOKENS)]
        self.log = TrainLog()
        self._stop: Any = None
        self._processes: list[Any] = []
        self._done_tokens = 0

    def run(self, on_chunk: Callable[[int, float], None]) -> TrainLog:
        if self.workers == 1:
            for j in range(len(self.plan)):
                self._record(*self.train_chunk(j, lambda: False), on_chunk)
            return self.log
        return self._run_workers(on_chunk)

    def stop(self) -> None:
        """Ctrl-C: workers finish their current batch and exit; the tables keep what they
        learnt. Safe to call more than once."""
        self.log.interrupted = True
        self._shutdown()

    def _shutdown(self) -> None:
        if self._stop is not None:
            self._stop.set()
        for process in self._processes:
            process.join(_JOIN_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
        self._processes = []

    def train_chunk(self, j: int, stopped: Callable[[], bool]) -> tuple[int, float, int]:
        """Train on chunk ``j`` of the plan: ``(tokens, summed loss, examples)``."""
        config, start = self.config, self.plan[j]
        ids = self.corpus.ids[start:start + CHUNK_TOKENS]
        lines = self.corpus.lines[start:start + CHUNK_TOKENS]
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + j)
        kept, kept_lines = subsample(ids, lines, self.keep, gen)
        if self.model.native_skipgram:  # examples made and trained in one native call
            reach = torch.randint(1, config.window + 1, kept.shape, generator=gen)
            first, last = (config.start_lr * (1.0 - (j + f) / len(self.plan)) for f in (0, 1))
            loss, count = self.model.train_skipgram(kept, kept_lines, reach, first, last,
                                                    config.start_lr * _MIN_LR_FRACTION, gen)
            return ids.numel(), loss, count
        inputs, mask, labels = examples(config.model, kept, kept_lines, config.window, gen)
        if labels.numel() == 0:
            return ids.numel(), 0.0, 0
        classes = self.model.negatives(labels, gen)
        n, size, total, count = labels.numel(), config.batch_size, 0.0, 0
        lrs = [config.start_lr * max(1.0 - (j + i / n) / len(self.plan), _MIN_LR_FRACTION)
               for i in range(0, n, size)]
        for first in range(0, len(lrs), _BATCHES_PER_CALL):  # a stop takes effect in between
            if stopped():
                break
            part = slice(first * size, (first + _BATCHES_PER_CALL) * size)
            total += self.model.train_batches(inputs[part],
                                              None if mask is None else mask[part],
                                              classes.rows(part),
                                              lrs[first:first + _BATCHES_PER_CALL])
            count += classes.labels[part].shape[0]
        return ids.numel(), total, count

    def _run_workers(self, on_chunk: Callable[[int, float], None]) -> TrainLog:
        ctx = multiprocessing.get_context("fork")
        queue, self._stop, taken = ctx.SimpleQueue(), ctx.Event(), ctx.Value("q", 0)
        self._processes = [ctx.Process(target=self._worker, args=(queue, taken), daemon=True)
                           for _ in range(self.workers)]
        # Ctrl-C while forking would raise inside fork's own handlers, where it is printed
        # and lost ("Exception ignored in ... _releaseLock"): SIGINT waits until the workers
        # exist, then arrives here as a KeyboardInterrupt the caller handles.
        blocked = _block_sigint()
        try:
            for process in self._processes:
                process.start()
        finally:
            _unblock_sigint(blocked)
        running = self.workers
        while running:
            message: tuple[int, float, int] | str | None = queue.get()
            if message is None:
                running -= 1
            elif isinstance(message, str):
                self._shutdown()
                raise WorkerError(f"a word2vec worker failed:\n{message}")
            else:
                self._record(*message, on_chunk)
        self._shutdown()
        return self.log

    def _worker(self, queue: Any, taken: Any) -> None:
        """A worker process: takes the next untaken chunk of the plan until none is left (so
        that no worker idles while another still has chunks), one message per chunk, then
        None."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
        _unblock_sigint(True)  # forked with SIGINT blocked (ignored from now on)
        torch.set_num_threads(1)
        try:
            while not self._stop.is_set():
                with taken.get_lock():
                    j = int(taken.value)
                    taken.value = j + 1
                if j >= len(self.plan):
                    break
                queue.put(self.train_chunk(j, self._stop.is_set))
        except BaseException:
            queue.put(traceback.format_exc())
        queue.put(None)

    def _record(self, tokens: int, loss: float, count: int,
                on_chunk: Callable[[int, float], None]) -> None:
        self._done_tokens += tokens
        self.log.examples += count
        self.log.words = round(self._done_tokens * self.corpus.num_words
                               / max(self.corpus.ids.numel(), 1))
        if count and math.isfinite(loss):
            self.log.words_seen.append(self.log.words)
            self.log.losses.append(loss / count)
        on_chunk(self.log.words, loss / max(count, 1))
