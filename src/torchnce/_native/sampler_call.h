// The argument block of the sampler kernels (samplers.cpp): samplers.py fills it through a
// ctypes Structure (_Call, field for field), pysamplers.cpp from its functions' arguments.
#pragma once

#include <cstdint>

extern "C" {

// One call of a sampler kernel, as samplers.py fills it (its ctypes Structure _Call mirrors
// this layout); each kernel reads the shared fields and its sampler's own.
struct TorchnceSamplerCall {
  const int64_t* true_classes;  // int64 [num_true_ids], the row-major [B, T] true classes
  int64_t num_true_ids;
  int64_t num_sampled;
  int64_t unique;
  const int64_t* fresh;  // a random int64 read from a torch.Generator, or null; then
  uint64_t key;          //   the key
  uint64_t offset;       //   and the offset of a SeedStream
  int64_t* candidates;   // out: int64 [num_sampled]
  float* true_count;     // out: float32 [num_true_ids]
  float* sampled_count;  // out: float32 [num_sampled]
  int64_t range;         // the number of classes (of the fixed sampler's table)
  double log_range;      // log-uniform: math.log1p(range)
  const double* threshold;  // fixed: FixedUnigramSampler's alias table and probabilities
  const int64_t* alias;
  const float* probs;
  int32_t* counts;          // learned: the counts [range], updated in place;
  const int64_t* base_cum;  //   the static cumulative counts [range] when base_total > 0;
  const int32_t* guide;     //   an index into them (torchnce_learned_guide), buckets of
  int64_t guide_width;      //   guide_width values of r (0: none, a search of all);
  int32_t* recent;          //   the recent classes [recent_len] (and room for `add` more);
  int64_t base_total;       //   the static counts' total minus range;
  int64_t recent_len;
  int64_t total;            //   W;
  int64_t add;              //   how many of the true classes to add (row-major);
  int64_t append;           //   whether they join the recent classes;
  int64_t* total_dev;       //   W on the device (int64 scalar), grows by add.
};

int64_t torchnce_uniform_sample(const TorchnceSamplerCall* c);
int64_t torchnce_log_uniform_sample(const TorchnceSamplerCall* c);
int64_t torchnce_alias_sample(const TorchnceSamplerCall* c);
int64_t torchnce_learned_sample(const TorchnceSamplerCall* c);
int torchnce_ids_in_range(const TorchnceSamplerCall* c);

}  // extern "C"
