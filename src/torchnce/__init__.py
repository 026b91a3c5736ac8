"""torchnce: TensorFlow's candidate-sampling losses for PyTorch, and what TensorFlow lacks.

The public names, by family: the TensorFlow port (same names, arguments and numbers as
``tf.nn`` and ``tf.random``), the PyTorch layer (modules and sampler classes), exact
evaluation over all classes, and contrastive retrieval losses. ``torchnce.distributed`` holds
the class-sharded output layer.
"""

# ruff: noqa: I001, E402 (the imports are grouped by family, not sorted, after the startup hook)

from torchnce._common import startup as _startup

_startup.stop_interrupts_while_starting()  # only for the torchnce command itself (see there)

# The TensorFlow port: tf.nn's sampled losses and lookups, tf.random's candidate samplers.
from torchnce._common.lookup import embedding_lookup
from torchnce._common.types import SampledValues
from torchnce._sampled.hits import compute_accidental_hits
from torchnce._sampled.logits import compute_sampled_logits
from torchnce._sampled.losses import nce_loss, negative_sampling_loss, sampled_softmax_loss
from torchnce._sampling.ops import (
    all_candidate_sampler,
    log_uniform_candidate_sampler,
    uniform_candidate_sampler,
)
from torchnce._sampling.unigram_ops import (
    fixed_unigram_candidate_sampler,
    learned_unigram_candidate_sampler,
)

# The PyTorch layer: output-layer modules and candidate samplers that own their state.
from torchnce._layers.modules import NCELoss, NegativeSamplingLoss, SampledSoftmaxLoss
from torchnce._layers.update import RowUpdate
from torchnce._sampling.fixed import FixedUnigramSampler
from torchnce._sampling.learned import LearnedUnigramSampler
from torchnce._sampling.samplers import (
    AllCandidateSampler,
    CandidateSampler,
    LogUniformSampler,
    UniformSampler,
)

# Exact evaluation over all classes, in bounded memory.
from torchnce._exact.evaluation import (
    full_logits,
    nce_eval_loss,
    sampled_softmax_eval_loss,
    top_k,
)

# The native CPU kernels: which path runs, and why.
from torchnce._native.build import NativeStatus, native_available

# Contrastive retrieval losses with log-Q correction.
from torchnce._contrastive.frequency import StreamingFrequencyEstimator
from torchnce._contrastive.info_nce import info_nce_loss
from torchnce._contrastive.mixed_negatives import mixed_negatives_loss
from torchnce._contrastive.queue import KeyQueue
from torchnce._contrastive.supcon import supervised_contrastive_loss



def __getattr__(name: str) -> str:
    """``__version__``, read from the installed metadata on first use (importing
    ``importlib.metadata`` costs 70 ms that most imports of torchnce never need)."""
    if name != "__version__":
        raise AttributeError(f"module 'torchnce' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("torchnce")
    except PackageNotFoundError:  # run from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found

__all__ = [
    "AllCandidateSampler",
    "CandidateSampler",
    "FixedUnigramSampler",
    "KeyQueue",
    "LearnedUnigramSampler",
    "LogUniformSampler",
    "NCELoss",
    "NativeStatus",
    "NegativeSamplingLoss",
    "RowUpdate",
    "SampledSoftmaxLoss",
    "SampledValues",
    "StreamingFrequencyEstimator",
    "UniformSampler",
    "all_candidate_sampler",
    "compute_accidental_hits",
    "compute_sampled_logits",
    "embedding_lookup",
    "fixed_unigram_candidate_sampler",
    "full_logits",
    "info_nce_loss",
    "learned_unigram_candidate_sampler",
    "log_uniform_candidate_sampler",
    "mixed_negatives_loss",
    "native_available",
    "nce_eval_loss",
    "nce_loss",
    "negative_sampling_loss",
    "sampled_softmax_eval_loss",
    "sampled_softmax_loss",
    "supervised_contrastive_loss",
    "top_k",
    "uniform_candidate_sampler",
]
