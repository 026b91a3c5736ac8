"""torchnce: TensorFlow's candidate-sampling losses for PyTorch."""

from torchnce._hits import compute_accidental_hits
from torchnce._logits import compute_sampled_logits
from torchnce._lookup import embedding_lookup
from torchnce._losses import nce_loss, sampled_softmax_loss
from torchnce._sampler_ops import log_uniform_candidate_sampler
from torchnce._types import SampledValues

__all__ = [
    "SampledValues",
    "compute_accidental_hits",
    "compute_sampled_logits",
    "embedding_lookup",
    "log_uniform_candidate_sampler",
    "nce_loss",
    "sampled_softmax_loss",
]
