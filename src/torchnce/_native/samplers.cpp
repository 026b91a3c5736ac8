// The candidate samplers of torchnce._sampling on the CPU (uniform, log-uniform, fixed and
// learned unigram draws with TensorFlow's unique semantics); see samplers.py.

#include <cstdint>
