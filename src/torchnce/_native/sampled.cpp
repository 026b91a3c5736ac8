// The fused sampled-loss kernels (nce_loss, sampled_softmax_loss, negative_sampling_loss) on
// the CPU; see sampled.py.

#include <cstdint>
