// The samplers' draws with a torch.Generator (or torch's default one) as Python functions
// (pybind11, the Python extension module _torchnce_samplers; build.py, library "samplers"):
// the seed, the three outputs and the kernel of samplers.cpp in one call, 1.7 µs of binding at
// S = 64 where a ctypes call takes 5.7 µs and a torch operator 4.7 µs (docs/native.md).
// samplers.py calls them with validated arguments; seed streams take the ctypes call.
//
//   sample(kind, true_classes, num_sampled, unique, range, log_range, generator)
//       kind 0 uniform, 1 log-uniform
//   sample_fixed(true_classes, num_sampled, unique, generator, threshold, alias, probs)
//   sample_learned(true_classes, num_sampled, unique, generator, counts, base_cum, recent,
//                  total_dev, guide, base_total, recent_len, total, guide_width, add, append)
//       -> (candidates, true counts, sampled counts), or None where a unique draw gave up
//   ids_in_range(ids, upper) -> whether every id lies in [0, upper)
//
// The seed is the value seed.random_(INT64_MIN, INT64_MAX, generator) gives, which the
// ctypes call and the pure path take: torch's own uniform_int_from_to_distribution over that
// range, under the generator's lock.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <torch/extension.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>

#include "sampler_call.h"

namespace {

using at::Tensor;

int64_t draw_seed(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  const uint64_t range = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) -
                         static_cast<uint64_t>(std::numeric_limits<int64_t>::min());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return at::uniform_int_from_to_distribution<int64_t>(range,
                                                       std::numeric_limits<int64_t>::min())(gen);
}

void need(bool ok, const char* what) {
  if (!ok) throw py::value_error(what);
}

// The shared fields of a call and its outputs; a large draw runs without the GIL (as a ctypes
// call does; a small one keeps it, which saves more than the draw takes).
py::object draw(int kind, const Tensor& tc, int64_t num_sampled, bool unique,
                const std::optional<at::Generator>& generator, TorchnceSamplerCall& call) {
  need(tc.device().is_cpu() && tc.scalar_type() == at::kLong && tc.dim() == 2 &&
           tc.is_contiguous(),
       "true_classes must be a contiguous [B, T] int64 CPU tensor");
  need(num_sampled >= 0 && call.range > 0, "num_sampled and range must be valid");
  const int64_t seed = draw_seed(generator);
  const auto f32 = tc.options().dtype(at::kFloat);
  Tensor candidates = at::empty({num_sampled}, tc.options());
  Tensor true_count = at::empty({tc.size(0), tc.size(1)}, f32);
  Tensor sampled_count = at::empty({num_sampled}, f32);
  call.true_classes = tc.data_ptr<int64_t>();
  call.num_true_ids = tc.numel();
  call.num_sampled = num_sampled;
  call.unique = unique ? 1 : 0;
  call.fresh = &seed;
  call.candidates = candidates.data_ptr<int64_t>();
  call.true_count = true_count.data_ptr<float>();
  call.sampled_count = sampled_count.data_ptr<float>();
  const auto run = [&]() {
    return kind == 0   ? torchnce_uniform_sample(&call)
           : kind == 1 ? torchnce_log_uniform_sample(&call)
           : kind == 2 ? torchnce_alias_sample(&call)
                       : torchnce_learned_sample(&call);
  };
  int64_t tries = 0;
  if (num_sampled + call.num_true_ids >= 8192) {
    py::gil_scoped_release released;
    tries = run();
  } else {
    tries = run();
  }
  if (tries < 0) return py::none();
  return py::make_tuple(candidates, true_count, sampled_count);
}

py::object sample(int64_t kind, const Tensor& tc, int64_t num_sampled, bool unique,
                  int64_t range, double log_range, std::optional<at::Generator> generator) {
  need(kind == 0 || kind == 1, "kind must be 0 or 1");
  TorchnceSamplerCall call{};
  call.range = range;
  call.log_range = log_range;
  return draw(static_cast<int>(kind), tc, num_sampled, unique, generator, call);
}

py::object sample_fixed(const Tensor& tc, int64_t num_sampled, bool unique,
                        std::optional<at::Generator> generator, const Tensor& threshold,
                        const Tensor& alias, const Tensor& probs) {
  const int64_t range = probs.numel();
  need(threshold.scalar_type() == at::kDouble && alias.scalar_type() == at::kLong &&
           probs.scalar_type() == at::kFloat && threshold.is_contiguous() &&
           alias.is_contiguous() && probs.is_contiguous() && threshold.numel() == range &&
           alias.numel() == range,
       "threshold, alias and probs must be the fixed sampler's tables");
  TorchnceSamplerCall call{};
  call.range = range;
  call.threshold = threshold.data_ptr<double>();
  call.alias = alias.data_ptr<int64_t>();
  call.probs = probs.data_ptr<float>();
  return draw(2, tc, num_sampled, unique, generator, call);
}

py::object sample_learned(const Tensor& tc, int64_t num_sampled, bool unique,
                          std::optional<at::Generator> generator, Tensor counts,
                          const Tensor& base_cum, Tensor recent, Tensor total_dev,
                          const Tensor& guide, int64_t base_total, int64_t recent_len,
                          int64_t total, int64_t guide_width, int64_t add, bool append) {
  need(counts.scalar_type() == at::kInt && counts.is_contiguous() &&
           base_cum.scalar_type() == at::kLong && base_cum.is_contiguous() &&
           recent.scalar_type() == at::kInt && recent.is_contiguous() &&
           total_dev.scalar_type() == at::kLong && guide.scalar_type() == at::kInt &&
           guide.is_contiguous() && (!append || recent.numel() >= recent_len + add) &&
           add <= tc.numel(),
       "the learned sampler's state must be its own buffers");
  TorchnceSamplerCall call{};
  call.range = counts.numel();
  call.counts = counts.data_ptr<int32_t>();
  call.base_cum = base_cum.data_ptr<int64_t>();
  call.recent = recent.data_ptr<int32_t>();
  call.total_dev = total_dev.data_ptr<int64_t>();
  call.guide = guide.data_ptr<int32_t>();
  call.base_total = base_total;
  call.recent_len = recent_len;
  call.total = total;
  call.guide_width = guide_width;
  call.add = add;
  call.append = append ? 1 : 0;
  return draw(3, tc, num_sampled, unique, generator, call);
}

// Whether every id of a contiguous int64 CPU tensor lies in [0, upper).
bool ids_in_range(const Tensor& ids, int64_t upper) {
  need(ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.is_contiguous(),
       "ids must be a contiguous int64 CPU tensor");
  TorchnceSamplerCall call{};
  call.true_classes = ids.data_ptr<int64_t>();
  call.num_true_ids = ids.numel();
  call.range = upper;
  return torchnce_ids_in_range(&call) != 0;
}

}  // namespace

PYBIND11_MODULE(_torchnce_samplers, m) {
  m.def("ids_in_range", &ids_in_range);
  m.def("sample", &sample);
  m.def("sample_fixed", &sample_fixed);
  m.def("sample_learned", &sample_learned);
}
