"""What every stage shares: argument checks, the type aliases, sharded lookup, true labels.

* ``checks``: argument validation and the error messages used in more than one place.
* ``types``: every alias and result type once (``SampledValues``, ``PartitionStrategy``,
  ``Reduction``, ``Mode``, ``LossKind``, ...) and ``apply_reduction``.
* ``lookup``: TensorFlow's "mod"/"div" shard layout, routing, ``embedding_lookup``.
* ``labels``: true labels in their three forms (padded with a mask or a padding id, ragged).

May import: torch only. Everything else in torchnce may import it.
"""
