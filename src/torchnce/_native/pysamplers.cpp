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
//       -> SampledValues(candidates, true counts, sampled counts), or None where a unique
//          draw gave up (true_classes: int64 [B, T] of any strides)
//   ids_in_range(ids, upper) -> whether every id lies in [0, upper)
//   LearnedCore(): LearnedUnigramSampler's state on CPU (below), whose
//       sample(true_classes, num_sampled, unique, generator) is sample_learned with no
//       other argument to convert and no Python bookkeeping around it
//
// The seed is the value seed.random_(INT64_MIN, INT64_MAX, generator) gives, which the
// ctypes call and the pure path take: torch's own uniform_int_from_to_distribution over that
// range, under the generator's lock.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <utility>

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

// torchnce's SampledValues (a NamedTuple), looked up when the module loads; never freed (an
// object released after the interpreter ends would crash it).
PyObject* values_type = nullptr;

// The three outputs of a call, made for its true classes and sample size.
struct Outputs {
  Tensor candidates, true_count, sampled_count;

  Outputs(const Tensor& tc, int64_t num_sampled)
      : candidates(at::empty({num_sampled}, tc.options())),
        true_count(at::empty({tc.size(0), tc.size(1)}, tc.options().dtype(at::kFloat))),
        sampled_count(at::empty({num_sampled}, tc.options().dtype(at::kFloat))) {}

  // The call's shared fields: the true classes, the sample, the seed, these outputs.
  void fill(TorchnceSamplerCall& call, const Tensor& tc, int64_t num_sampled, bool unique,
            const int64_t* seed) {
    call.true_classes = tc.data_ptr<int64_t>();
    call.num_true_ids = tc.numel();
    call.num_sampled = num_sampled;
    call.unique = unique ? 1 : 0;
    call.fresh = seed;
    call.candidates = candidates.data_ptr<int64_t>();
    call.true_count = true_count.data_ptr<float>();
    call.sampled_count = sampled_count.data_ptr<float>();
  }

  // SampledValues(candidates, true_count, sampled_count), as tuple.__new__ builds it (a
  // NamedTuple's own __new__ is a Python function).
  py::object values() const {
    const py::tuple args = py::make_tuple(py::make_tuple(candidates, true_count, sampled_count));
    PyObject* made =
        PyTuple_Type.tp_new(reinterpret_cast<PyTypeObject*>(values_type), args.ptr(), nullptr);
    if (made == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(made);
  }
};

// Whether a call is large enough to run without the GIL (as a ctypes call does; a small one
// keeps it, which saves more than the draw takes).
bool without_gil(const Tensor& tc, int64_t num_sampled) {
  return num_sampled + tc.numel() >= 8192;
}

// The learned sampler's fields of a call: its buffers (validated by the caller), its scalars
// (W = range + base_total + recent_len), and the update (add true classes; append: to the
// recent classes).
void set_learned(TorchnceSamplerCall& call, const Tensor& counts, const Tensor& base_cum,
                 const Tensor& recent, const Tensor& total_dev, const Tensor& guide,
                 int64_t base_total, int64_t recent_len, int64_t guide_width, int64_t add,
                 bool append) {
  call.range = counts.numel();
  call.counts = counts.data_ptr<int32_t>();
  call.base_cum = base_cum.data_ptr<int64_t>();
  call.recent = recent.data_ptr<int32_t>();
  call.total_dev = total_dev.data_ptr<int64_t>();
  call.guide = guide.data_ptr<int32_t>();
  call.base_total = base_total;
  call.recent_len = recent_len;
  call.total = call.range + base_total + recent_len;
  call.guide_width = guide_width;
  call.add = add;
  call.append = append ? 1 : 0;
}

// A call of one of the free functions: its outputs, the seed, the kernel.
py::object draw(int kind, const Tensor& true_classes, int64_t num_sampled, bool unique,
                const std::optional<at::Generator>& generator, TorchnceSamplerCall& call) {
  need(true_classes.device().is_cpu() && true_classes.scalar_type() == at::kLong &&
           true_classes.dim() == 2,
       "true_classes must be a [B, T] int64 CPU tensor");
  const Tensor tc = true_classes.contiguous();  // a layer's labels may be a view
  need(num_sampled >= 0 && call.range > 0, "num_sampled and range must be valid");
  const int64_t seed = draw_seed(generator);
  Outputs out(tc, num_sampled);
  out.fill(call, tc, num_sampled, unique, &seed);
  const auto run = [&]() {
    return kind == 0   ? torchnce_uniform_sample(&call)
           : kind == 1 ? torchnce_log_uniform_sample(&call)
           : kind == 2 ? torchnce_alias_sample(&call)
                       : torchnce_learned_sample(&call);
  };
  int64_t tries = 0;
  if (without_gil(tc, num_sampled)) {
    py::gil_scoped_release released;
    tries = run();
  } else {
    tries = run();
  }
  if (tries < 0) return py::none();
  return out.values();
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
  need(total == counts.numel() + base_total + recent_len, "total must be the counts' sum");
  TorchnceSamplerCall call{};
  set_learned(call, counts, base_cum, recent, total_dev, guide, base_total, recent_len,
              guide_width, add, append);
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

// LearnedUnigramSampler's state for its native calls: its buffers (the same tensors as the
// module's, bound again by learned.py whenever one is replaced: a fold, a grown recent
// buffer, .to(), a load), its scalars, and the number of recent classes, which lives here
// between calls (learned.py's _recent_len reads and writes it). sample() runs a call that
// appends (or adds nothing) in full; one that needs a bigger recent buffer or a fold returns
// False before changing anything, and learned.py takes its general path (sample_learned).
// A recursive mutex orders the calls of several threads: sample() and every accessor take
// it, and learned.py holds it (acquire/release) around its general path. A thread waits for
// it only without the GIL (Guard), so a thread that holds it can always take the GIL.
class LearnedCore {
 public:
  // The buffers (contiguous CPU tensors of the sampler's dtypes) and scalars after a change.
  void bind(Tensor counts, Tensor base_cum, Tensor recent, Tensor total_dev, Tensor guide,
            int64_t base_total, int64_t guide_width, int64_t fold_at) {
    need(counts.device().is_cpu() && counts.scalar_type() == at::kInt && counts.dim() == 1 &&
             counts.is_contiguous() && counts.numel() > 0 && base_cum.device().is_cpu() &&
             base_cum.scalar_type() == at::kLong && base_cum.is_contiguous() &&
             (base_total == 0 || base_cum.numel() == counts.numel()) &&
             recent.device().is_cpu() && recent.scalar_type() == at::kInt &&
             recent.is_contiguous() && total_dev.device().is_cpu() &&
             total_dev.scalar_type() == at::kLong && total_dev.numel() == 1 &&
             guide.device().is_cpu() && guide.scalar_type() == at::kInt &&
             guide.is_contiguous() && (guide_width == 0 || guide.numel() > 0) &&
             base_total >= 0 && guide_width >= 0 && fold_at > 0,
         "the learned sampler's state must be its own CPU buffers");
    const Guard guard(mutex_);
    counts_ = std::move(counts);
    base_cum_ = std::move(base_cum);
    recent_ = std::move(recent);
    total_dev_ = std::move(total_dev);
    guide_ = std::move(guide);
    base_total_ = base_total;
    guide_width_ = guide_width;
    fold_at_ = fold_at;
    bound_ = true;
  }

  int64_t recent_len() {
    const Guard guard(mutex_);
    return recent_len_;
  }

  void set_recent_len(int64_t value) {
    need(value >= 0, "recent_len must be >= 0");
    const Guard guard(mutex_);
    recent_len_ = value;
  }

  // The lock for learned.py's general path (released by the same thread, once per acquire).
  void acquire() { Guard::lock(mutex_); }
  void release() { mutex_.unlock(); }

  // The values, None where a unique draw gave up, or False where the general path must run.
  py::object sample(const Tensor& true_classes, int64_t num_sampled, bool unique,
                    const std::optional<at::Generator>& generator) {
    need(true_classes.device().is_cpu() && true_classes.scalar_type() == at::kLong &&
             true_classes.dim() == 2,
         "true_classes must be a [B, T] int64 CPU tensor");
    need(num_sampled >= 0, "num_sampled must be >= 0");
    const Tensor tc = true_classes.contiguous();  // a layer's labels may be a view
    Outputs out(tc, num_sampled);
    int64_t tries = kGeneral;
    {
      const Guard guard(mutex_);
      std::optional<py::gil_scoped_release> released;
      if (without_gil(tc, num_sampled)) released.emplace();
      const int64_t total = (bound_ ? counts_.numel() : 0) + base_total_ + recent_len_;
      const int64_t add = std::max<int64_t>(std::min<int64_t>(tc.numel(), kLimit - total), 0);
      const int64_t end = recent_len_ + add;
      if (bound_ && (add == 0 || (end <= fold_at_ && end <= recent_.numel()))) {
        const int64_t seed = draw_seed(generator);
        TorchnceSamplerCall call{};
        out.fill(call, tc, num_sampled, unique, &seed);
        set_learned(call, counts_, base_cum_, recent_, total_dev_, guide_, base_total_,
                    recent_len_, guide_width_, add, add > 0);
        tries = torchnce_learned_sample(&call);
        if (tries >= 0) recent_len_ = end;
      }
    }
    if (tries == kGeneral) return py::bool_(false);
    if (tries < 0) return py::none();
    return out.values();
  }

 private:
  static constexpr int64_t kGeneral = -100;  // no kernel result: the general path runs
  static constexpr int64_t kLimit = (int64_t{1} << 31) - 1;  // W stays below it
  // Holds a mutex for its scope; where another thread holds it, waits without the GIL.
  class Guard {
   public:
    explicit Guard(std::recursive_mutex& mutex) : mutex_(mutex) { lock(mutex); }
    ~Guard() { mutex_.unlock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    static void lock(std::recursive_mutex& mutex) {
      if (!mutex.try_lock()) {
        py::gil_scoped_release released;
        mutex.lock();
      }
    }

   private:
    std::recursive_mutex& mutex_;
  };

  std::recursive_mutex mutex_;
  Tensor counts_, base_cum_, recent_, total_dev_, guide_;
  int64_t base_total_ = 0, guide_width_ = 0, fold_at_ = 1, recent_len_ = 0;
  bool bound_ = false;
};

}  // namespace

PYBIND11_MODULE(_torchnce_samplers, m) {
  values_type =
      py::object(py::module_::import("torchnce._common.types").attr("SampledValues")).release().ptr();
  need(PyType_Check(values_type) &&
           PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(values_type), &PyTuple_Type),
       "torchnce's SampledValues must be a tuple type");
  m.def("ids_in_range", &ids_in_range);
  m.def("sample", &sample);
  m.def("sample_fixed", &sample_fixed);
  m.def("sample_learned", &sample_learned);
  py::class_<LearnedCore>(m, "LearnedCore")
      .def(py::init<>())
      .def("bind", &LearnedCore::bind)
      .def("acquire", &LearnedCore::acquire)
      .def("release", &LearnedCore::release)
      .def("sample", &LearnedCore::sample)
      .def_property("recent_len", &LearnedCore::recent_len, &LearnedCore::set_recent_len);
}
