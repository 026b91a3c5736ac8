"""The PyTorch layer: output-layer modules that own parameters and a sampler.

* ``base``: ``OutputLayer``, configuration, parameters, sampler and the validated forward.
* ``modules``: the final classes ``NCELoss``, ``SampledSoftmaxLoss``, ``NegativeSamplingLoss``.

May import: ``torchnce._common``, ``torchnce._sampling``, ``torchnce._sampled``,
``torchnce._exact``.
"""
