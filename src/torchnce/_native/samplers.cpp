// The candidate samplers of torchnce._sampling on the CPU: uniform, log-uniform, fixed
// unigram (an alias table) and learned unigram draws, TensorFlow's unique semantics (its
// sequential rejection loop, docs/tf-semantics.md §6.3) and expected counts (§6.4), and the
// learned sampler's update (§6.7), one call per sample (samplers.py binds them; the
// pure-PyTorch twins in src/torchnce/_sampling are the oracles).
//
// Preconditions (torchnce._sampling checks them; the kernels trust them): every true class
// lies in [0, range); 1 <= range < 2⁶²; num_sampled >= 1; with unique, num_sampled distinct
// ids can be drawn; the tables are contiguous, of the documented dtypes and lengths.
//
// The random stream is the pure path's seed= stream (torchnce._sampling.draw.SeedStream), bit
// for bit: u_i = (mix(i xor key) >> 11) · 2⁻⁵³ for the counters i = offset + 1, ..., where
// mix(z) = SplitMix64's finaliser of z·φ. Each draw takes one u_i and transforms it as the
// pure draw does, so a call draws the candidates of the pure path, eager or compiled. A call
// with a torch.Generator reads one random int64 v from it (samplers.py) and uses the key
// SeedStream(v) has; on CPU the pure path does the same.
//
// Every function returns num_tries (>= num_sampled), or kTooManyTries when a unique draw
// needed more than 2³¹ − 1 draws (too few drawable ids; torchnce._sampling raises).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>
#include "sampler_call.h"

// The loops over ids below are `omp simd` loops (-fopenmp-simd). With g++ and glibc >= 2.35 on
// x86-64 they call glibc's vector log1p and expm1 (libmvec, which libm's link script
// brings in): the same results to within an ulp of double, which the float32 roundings that
// follow absorb (no float32 difference from the scalar functions in 8·10⁶ trials of each
// use), at 1-2 ns a value instead of 2.5-15 ns. Elsewhere the loops call the scalar ones.
// (The pure path computes with torch's vectorised functions, within an ulp of double too.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
extern "C" {
double log1p(double) noexcept __attribute__((simd("notinbranch")));
double expm1(double) noexcept __attribute__((simd("notinbranch")));
}
#endif

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;  // SplitMix64's increment and multipliers
constexpr uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
constexpr uint64_t kMix2 = 0x94D049BB133111EBULL;
constexpr uint64_t kKeyXor = 0x5851F42D4C957F2DULL;  // SeedStream's key: (seed·φ) xor this, | 1
constexpr int64_t kMaxTries = (int64_t{1} << 31) - 1;
constexpr int64_t kTooManyTries = -2;

// SeedStream.rand: the i-th value (i = 1, 2, ...) is (mix(i xor key) >> 11) · 2⁻⁵³, where
// mix(z) = SplitMix64's finaliser of z·φ; a stream is its key and the count already taken.
struct Stream {
  uint64_t key;
  uint64_t offset;
  double uniform(uint64_t i) const {
    uint64_t z = (i ^ key) * kGolden;
    z = (z ^ (z >> 30)) * kMix1;
    z = (z ^ (z >> 27)) * kMix2;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  }
};

Stream make_stream(const int64_t* fresh, uint64_t key, uint64_t offset) {
  if (fresh != nullptr) return {((static_cast<uint64_t>(*fresh) * kGolden) ^ kKeyXor) | 1, 0};
  return {key, offset};
}

// trunc(x) clamped to upper − 1, for 0 <= x < 2⁶³ (ranges are below 2⁶²): the pure path's
// .to(int64).clamp_(max=upper − 1). (A clamp of the integer vectorises; one of x, compared with
// a libm result, does not with g++ 12.)
inline int64_t below(double x, int64_t upper) {
  return std::min<int64_t>(static_cast<int64_t>(x), upper - 1);
}

// Each sampler maps a uniform u to an id (`id`, as its pure draw does; the learned sampler
// draws a block at once) and gives P(id) (`probability`, TensorFlow's float32 value).

// uniform_ints: floor(u·range), P(k) = fl32(1 / range) (the division in double).
struct Uniform {
  int64_t range;
  int64_t id(double u) const { return below(u * static_cast<double>(range), range); }
  float probability(int64_t) const { return static_cast<float>(1.0 / static_cast<double>(range)); }
};

// log_uniform_draw: trunc(expm1(u·log1p(range))) (= ⌊exp(u·log1p(range))⌋ − 1, TensorFlow's
// draw, but where exp rounds across an integer); P(k) = fl32(log1p(fl((k + 2) / (k + 1)) − 1)
// / log1p(range)), all in double.
struct LogUniform {
  int64_t range;
  double log_range;  // math.log1p(range), from Python
  int64_t id(double u) const { return below(expm1(u * log_range), range); }
  float probability(int64_t k) const {
    const double kd = static_cast<double>(k);
    return static_cast<float>(log1p((kd + 2.0) / (kd + 1.0) - 1.0) / log_range);
  }
};

// alias_draw: x = u·n, column c = trunc(x) (at most n − 1), c if x < threshold[c] (the
// threshold holds c + the column's share) else alias[c]; P(k) = probs[k].
struct Alias {
  const double* threshold;
  const int64_t* alias;
  const float* probs;
  int64_t n;
  int64_t id(double u) const {
    const double x = u * static_cast<double>(n);
    const int64_t column = below(x, n);
    return x < threshold[column] ? column : alias[column];
  }
  float probability(int64_t k) const { return probs[k]; }
};

// LearnedUnigramSampler._draw: r = floor(u·W); below the static total C + base_total, the
// smallest i with base_cum[i] > r (base_cum the cumulative static counts; r itself while
// they are all 1), else the recent class recent[r − static total] (its own draw below).
// P(k) = fl32(w_k) / fl32(W).
struct Learned {
  const int32_t* counts;
  const int64_t* base_cum;  // [range] when base_total > 0
  const int32_t* guide;     // guide[j] = upper_bound(base_cum, j·guide_width) (if the width > 0)
  int64_t guide_width;
  const int32_t* recent;    // [recent_len]
  int64_t range, base_total, recent_len, total;
  float probability(int64_t k) const {
    return static_cast<float>(counts[k]) / static_cast<float>(total);
  }
};

// The ids of the stream's values first + 1, ..., first + n (after its offset).
template <class Dist>
void draw(const Dist& dist, const Stream& stream, uint64_t first, int64_t n, int64_t* ids) {
  const uint64_t start = stream.offset + first + 1;
#pragma omp simd simdlen(8)  // 8 lanes: twice the speed of g++'s 4 for AVX-512's exp
  for (int64_t i = 0; i < n; ++i) ids[i] = dist.id(stream.uniform(start + i));
}

// upper_bound(sorted, sorted + n, r[i]) − sorted for every i (n >= 1), 16 searches at a time
// in lockstep: branch-free halving (Khuong and Morin, arXiv:1509.05053), the 16 loads of a
// step independent, so their cache misses overlap (a search over 10⁶ counts is ~20 steps).
void upper_bounds(const int64_t* sorted, int64_t n, const int64_t* r, int64_t m, int64_t* out) {
  constexpr int64_t kLanes = 16;
  for (int64_t first = 0; first < m; first += kLanes) {
    const int64_t lanes = std::min(kLanes, m - first);
    int64_t at[kLanes] = {};
    for (int64_t len = n; len > 1; len -= len / 2) {
      const int64_t half = len / 2;
      for (int64_t q = 0; q < lanes; ++q)
        at[q] += sorted[at[q] + half] <= r[first + q] ? half : 0;
    }
    for (int64_t q = 0; q < lanes; ++q) out[first + q] = at[q] + (sorted[at[q]] <= r[first + q]);
  }
}

void draw(const Learned& dist, const Stream& stream, uint64_t first, int64_t n, int64_t* ids) {
  const uint64_t start = stream.offset + first + 1;
  const int64_t fixed = dist.range + dist.base_total;
  std::unique_ptr<int64_t[]> r(new int64_t[n]);
#pragma omp simd simdlen(8)
  for (int64_t i = 0; i < n; ++i)
    r[i] = below(stream.uniform(start + i) * static_cast<double>(dist.total), dist.total);
  if (dist.base_total > 0 && dist.guide_width > 0) {
    // r in bucket j = r / w has its answer in [guide[j], guide[j + 1]]: a few values at most
    // where counts are >= w, about w where they are 1 (w is the mean count).
    for (int64_t i = 0; i < n; ++i) {
      if (r[i] >= fixed) continue;
      const int64_t j = r[i] / dist.guide_width;
      const int64_t* lo = dist.base_cum + dist.guide[j];
      ids[i] = std::upper_bound(lo, dist.base_cum + dist.guide[j + 1], r[i]) - dist.base_cum;
    }
  } else if (dist.base_total > 0) {
    upper_bounds(dist.base_cum, dist.range, r.get(), n, ids);
  } else {
    std::copy(r.get(), r.get() + n, ids);
  }
  for (int64_t i = 0; i < n; ++i)
    if (r[i] >= fixed) ids[i] = dist.recent[std::min(r[i] - fixed, dist.recent_len - 1)];
}

// The ids drawn so far, for the rejection loop: open addressing over a power-of-two table at
// most an eighth full (probes mispredict: a fuller table cost twice the time at S = 1024),
// indexed by the top bits of id·φ. Each thread keeps a table of up to 2¹⁷ slots between calls;
// a slot holds the id and the call that wrote it, so a call starts from an empty set without
// clearing the table. Larger sets (S > 16384) take a table of their own, twice S.
class IdSet {
 public:
  explicit IdSet(int64_t size) {
    const uint64_t count = static_cast<uint64_t>(size);
    const uint64_t want = count * (count <= kKeptSlots / 8 ? 8 : 2);
    int bits = 5;
    while ((uint64_t{1} << bits) < want) ++bits;
    shift_ = 64 - bits;
    mask_ = (uint64_t{1} << bits) - 1;
    if (mask_ >= kKeptSlots) {
      own_.assign(mask_ + 1, Slot{0, 1});
      table_ = own_.data();
      call_ = 0;
      return;
    }
    if (kept_.size() < kKeptSlots) kept_.assign(kKeptSlots, Slot{0, 0});
    if (++kept_call_ == 0) {  // the stamps wrapped: clear them once
      std::fill(kept_.begin(), kept_.end(), Slot{0, 0});
      kept_call_ = 1;
    }
    table_ = kept_.data();
    call_ = kept_call_;
  }
  bool insert(int64_t id) {  // whether id is new
    for (uint64_t h = (static_cast<uint64_t>(id) * kGolden) >> shift_;; h = (h + 1) & mask_) {
      Slot& slot = table_[h];
      if (slot.call != call_) {
        slot = Slot{id, call_};
        return true;
      }
      if (slot.id == id) return false;
    }
  }

 private:
  struct Slot {
    int64_t id;
    uint64_t call;
  };
  static constexpr uint64_t kKeptSlots = uint64_t{1} << 17;  // 2 MiB a thread
  static thread_local std::vector<Slot> kept_;
  static thread_local uint64_t kept_call_;
  std::vector<Slot> own_;
  Slot* table_;
  uint64_t call_;
  int shift_;
  uint64_t mask_;
};
thread_local std::vector<IdSet::Slot> IdSet::kept_;
thread_local uint64_t IdSet::kept_call_ = 0;

// The candidates and num_tries: unique=False is num_sampled draws (num_tries = num_sampled);
// unique=True is TensorFlow's loop (§6.3): draw until num_sampled distinct ids, keep them in
// first-seen order, num_tries = every draw. The loop draws in blocks (the stream's values are
// independent of each other, so a block is the loop's next draws): the first of S + 16, each
// next one sized by the rate of new ids so far (with a quarter more), the last one's unused
// tail left over.
template <class Dist>
int64_t draw_candidates(const Dist& dist, const Stream& stream, int64_t num_sampled,
                        bool unique, int64_t* candidates) {
  if (!unique) {
    draw(dist, stream, 0, num_sampled, candidates);
    return num_sampled;
  }
  IdSet seen(num_sampled);
  std::unique_ptr<int64_t[]> block;
  int64_t tries = 0, found = 0, size = num_sampled + 16;
  while (tries < kMaxTries) {
    block.reset(new int64_t[size]);
    draw(dist, stream, tries, size, block.get());
    for (int64_t i = 0; i < size; ++i) {
      if (!seen.insert(block[i])) continue;
      candidates[found++] = block[i];
      if (found == num_sampled) return tries + i + 1;
    }
    tries += size;
    const double rate = static_cast<double>(std::max<int64_t>(found, 1)) / tries;
    size = std::min<int64_t>(1.25 * (num_sampled - found) / rate + 16, 1 << 20);
  }
  return kTooManyTries;
}

// ExpectedCountHelper (docs/tf-semantics.md §6.4) for ids [n] into out [n], with the pure
// path's rounding points: Q = fl32(p·S) when num_tries = S, else
// −fl32(expm1(fl32(fl32(log1p(−p))·fl32(num_tries)))).
template <class Dist>
void expected_counts(const Dist& dist, const int64_t* ids, int64_t n, int64_t tries,
                     int64_t num_sampled, float* out) {
  if (tries == num_sampled) {
    const float s = static_cast<float>(num_sampled);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = dist.probability(ids[i]) * s;
    return;
  }
  const float t = static_cast<float>(tries);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const double p = dist.probability(ids[i]);
    const float log_miss = static_cast<float>(log1p(-p));
    out[i] = -static_cast<float>(expm1(static_cast<double>(log_miss * t)));
  }
}

// The draw, then both expected counts.
template <class Dist>
int64_t sample(const Dist& dist, const Stream& stream, int64_t num_sampled, bool unique,
               const int64_t* true_classes, int64_t num_true_ids, int64_t* candidates,
               float* true_count, float* sampled_count) {
  const int64_t tries = draw_candidates(dist, stream, num_sampled, unique, candidates);
  if (tries < 0) return tries;
  expected_counts(dist, true_classes, num_true_ids, tries, num_sampled, true_count);
  expected_counts(dist, candidates, num_sampled, tries, num_sampled, sampled_count);
  return tries;
}

// The uniform sampler's counts are one value.
int64_t sample_uniform(const Uniform& dist, const Stream& stream, int64_t num_sampled,
                       bool unique, int64_t num_true_ids, int64_t* candidates, float* true_count,
                       float* sampled_count) {
  const int64_t tries = draw_candidates(dist, stream, num_sampled, unique, candidates);
  if (tries < 0) return tries;
  const int64_t any_id = 0;
  float q;
  expected_counts(dist, &any_id, 1, tries, num_sampled, &q);
  std::fill(true_count, true_count + num_true_ids, q);
  std::fill(sampled_count, sampled_count + num_sampled, q);
  return tries;
}

}  // namespace

extern "C" {

int64_t torchnce_uniform_sample(const TorchnceSamplerCall* c) {
  return sample_uniform(Uniform{c->range}, make_stream(c->fresh, c->key, c->offset),
                        c->num_sampled, c->unique != 0, c->num_true_ids, c->candidates,
                        c->true_count, c->sampled_count);
}

int64_t torchnce_log_uniform_sample(const TorchnceSamplerCall* c) {
  return sample(LogUniform{c->range, c->log_range}, make_stream(c->fresh, c->key, c->offset),
                c->num_sampled, c->unique != 0, c->true_classes, c->num_true_ids,
                c->candidates, c->true_count, c->sampled_count);
}

int64_t torchnce_alias_sample(const TorchnceSamplerCall* c) {
  return sample(Alias{c->threshold, c->alias, c->probs, c->range},
                make_stream(c->fresh, c->key, c->offset), c->num_sampled, c->unique != 0,
                c->true_classes, c->num_true_ids, c->candidates, c->true_count,
                c->sampled_count);
}

// The learned sampler's draw from its state, then its update: the first `add` true classes
// each add 1 to their count and, with `append`, follow the recent classes.
int64_t torchnce_learned_sample(const TorchnceSamplerCall* c) {
  const Learned dist{c->counts,     c->base_cum,   c->guide, c->guide_width, c->recent,
                     c->range,      c->base_total, c->recent_len, c->total};
  const int64_t tries = sample(dist, make_stream(c->fresh, c->key, c->offset), c->num_sampled,
                               c->unique != 0, c->true_classes, c->num_true_ids,
                               c->candidates, c->true_count, c->sampled_count);
  if (tries < 0) return tries;
  for (int64_t i = 0; i < c->add; ++i) ++c->counts[c->true_classes[i]];
  if (c->append != 0)
    for (int64_t i = 0; i < c->add; ++i)
      c->recent[c->recent_len + i] = static_cast<int32_t>(c->true_classes[i]);
  *c->total_dev += c->add;
  return tries;
}

// The learned draw's guide (once per fold): guide[j] = upper_bound(cum, cum + n, j·width) − cum
// for j = 0 … ⌈cum[n − 1] / width⌉ (guide holds that many + 1), by one merge, O(n + buckets).
int torchnce_learned_guide(const int64_t* cum, int64_t n, int64_t width, int32_t* guide) {
  const int64_t buckets = (cum[n - 1] + width - 1) / width;
  int64_t i = 0;
  for (int64_t j = 0; j <= buckets; ++j) {
    while (i < n && cum[i] <= j * width) ++i;
    guide[j] = static_cast<int32_t>(i);
  }
  return 0;
}

// The range check of the true classes: whether every one lies in [0, range) (the call's
// true_classes, num_true_ids and range; nothing else is read).
int torchnce_ids_in_range(const TorchnceSamplerCall* c) {
  int64_t lo = 0, hi = 0;
  for (int64_t i = 0; i < c->num_true_ids; ++i) {
    lo = std::min(lo, c->true_classes[i]);
    hi = std::max(hi, c->true_classes[i]);
  }
  return lo >= 0 && hi < c->range;
}

}  // extern "C"
