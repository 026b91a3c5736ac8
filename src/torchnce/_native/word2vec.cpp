// word2vec's SGD over a chunk of examples, batch by batch: the native twin of
// Word2Vec.step (src/torchnce/app/word2vec/model.py), which is the pure-PyTorch reference.
//
// Plain C++ with no torch headers (it builds in seconds); the Python binding validates every
// argument and passes raw pointers of contiguous tensors, so the kernel trusts them:
//   in_vec, out_vec   float32 [V, D], updated in place (Hogwild: other processes may write too)
//   inputs            int64 [N, W]: the centre (W = 1, skip-gram) or the context ids (CBOW)
//   mask              uint8 [N, W] real context slots (CBOW), or null for skip-gram
//   labels            int64 [N], negatives int64 [N, K]; every id in [0, V)
//   true_logq         float32 [N] and neg_logq float32 [N, K] (log expected counts), or null
//   lrs               float32 [ceil(N / batch)], the learning rate of each batch
// Examples are trained one after the other (word2vec's own SGD, as gensim and word2vec.c do):
// each example's gradients come from the tables as they are after the previous example, and
// batch b (examples [b * batch, (b + 1) * batch)) only fixes the learning rate lrs[b]. With
// batch = 1 this is exactly the pure step, which computes a whole batch from the tables at
// its start; the tests compare the two there.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xoshiro.h"

#if defined(__SSE__) || defined(__AVX2__) || defined(__AVX512F__)
// GCC 12 warns about its own _mm512_reduce_add_ps (an uninitialised dummy in the header).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace {

using torchnce_native::alias_draw;
using torchnce_native::Xoshiro256;

constexpr float kFltMax = 3.40282346638528859812e+38F;
constexpr int64_t kAhead = 4;  // examples between a prefetch and the use of its rows

// Dot products and axpy, the two loops everything else calls: AVX-512 (16 lanes, a masked
// tail) or AVX2 (8 lanes) when the build machine has them (the build uses -march=native),
// else a loop the compiler vectorises as it can.
#if defined(__AVX512F__)
float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  __m512 s = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    s = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), s);
  if (d < n) {
    const __mmask16 m = static_cast<__mmask16>((1U << (n - d)) - 1U);
    s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), s);
  }
  return _mm512_reduce_add_ps(s);
}

// y += a * x
void axpy(float a, const float* __restrict x, float* __restrict y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    _mm512_storeu_ps(y + d, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + d), _mm512_loadu_ps(y + d)));
  if (d < n) {
    const __mmask16 m = static_cast<__mmask16>((1U << (n - d)) - 1U);
    const __m512 r =
        _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + d), _mm512_maskz_loadu_ps(m, y + d));
    _mm512_mask_storeu_ps(y + d, m, r);
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  __m256 s = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  float total = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
  for (; d < n; ++d) total += a[d] * b[d];
  return total;
}

// y += a * x
void axpy(float a, const float* __restrict x, float* __restrict y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    _mm256_storeu_ps(y + d, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + d), _mm256_loadu_ps(y + d)));
  for (; d < n; ++d) y[d] += a * x[d];
}
#else
float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.0F;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// y += a * x
void axpy(float a, const float* __restrict x, float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] += a * x[d];
}
#endif

// Whether the n row pointers are pairwise different.
bool distinct(float* const* rows, int64_t n) {
  for (int64_t a = 1; a < n; ++a)
    for (int64_t b = 0; b < a; ++b)
      if (rows[a] == rows[b]) return false;
  return true;
}

// gx += a * w and then w += a * x, in one pass over w (w, x and gx distinct).
void axpy_both(float a, float* __restrict w, const float* __restrict x, float* __restrict gx,
               int64_t n) {
  int64_t d = 0;
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(a);
  for (; d + 16 <= n; d += 16) {
    const __m512 wd = _mm512_loadu_ps(w + d);
    _mm512_storeu_ps(gx + d, _mm512_fmadd_ps(va, wd, _mm512_loadu_ps(gx + d)));
    _mm512_storeu_ps(w + d, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + d), wd));
  }
  if (d < n) {
    const __mmask16 m = static_cast<__mmask16>((1U << (n - d)) - 1U);
    const __m512 wd = _mm512_maskz_loadu_ps(m, w + d);
    _mm512_mask_storeu_ps(gx + d, m, _mm512_fmadd_ps(va, wd, _mm512_maskz_loadu_ps(m, gx + d)));
    _mm512_mask_storeu_ps(w + d, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + d), wd));
  }
  return;
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 va = _mm256_set1_ps(a);
  for (; d + 8 <= n; d += 8) {
    const __m256 wd = _mm256_loadu_ps(w + d);
    _mm256_storeu_ps(gx + d, _mm256_fmadd_ps(va, wd, _mm256_loadu_ps(gx + d)));
    _mm256_storeu_ps(w + d, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + d), wd));
  }
#endif
  for (; d < n; ++d) {
    const float wd = w[d];
    gx[d] += a * wd;
    w[d] = wd + a * x[d];
  }
}

// Asks for the rows of example i (its inputs, label and negatives) ahead of their use: the
// rows are random, so without this every one is a cache miss the loop waits for.
void prefetch_rows(const float* table_in, const float* table_out, const int64_t* inputs,
                   int64_t width, const int64_t* labels, const int64_t* negatives, int64_t k,
                   int64_t i, int64_t dim) {
#if defined(__SSE__)
  const int64_t lines = (dim * 4 + 63) / 64;
  auto fetch = [lines](const float* row) {
    for (int64_t l = 0; l < lines; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(row) + 64 * l, _MM_HINT_T0);
  };
  for (int64_t w = 0; w < width; ++w) fetch(table_in + inputs[i * width + w] * dim);
  fetch(table_out + labels[i] * dim);
  for (int64_t j = 0; j < k; ++j) fetch(table_out + negatives[i * k + j] * dim);
#else
  (void)table_in, (void)table_out, (void)inputs, (void)width, (void)labels, (void)negatives;
  (void)k, (void)i, (void)dim;
#endif
}

struct Chunk {
  float* in_vec;
  float* out_vec;
  int64_t dim;
  const int64_t* inputs;
  int64_t width;
  const uint8_t* mask;
  const int64_t* labels;
  const int64_t* negatives;
  int64_t k;
  const float* true_logq;
  const float* neg_logq;
  int softmax;
  int remove_hits;
};

// The input vector of example i: its centre row, or the mean of its real context rows.
// Returns the share 1/n of each context row (1 for skip-gram).
float input_vector(const Chunk& c, int64_t i, float* x) {
  const int64_t* ids = c.inputs + i * c.width;
  if (c.mask == nullptr) {
    std::memcpy(x, c.in_vec + ids[0] * c.dim, sizeof(float) * c.dim);
    return 1.0F;
  }
  const uint8_t* real = c.mask + i * c.width;
  int64_t n = 0;
  for (int64_t w = 0; w < c.width; ++w) n += real[w] != 0;
  const float share = 1.0F / static_cast<float>(n);
  std::memset(x, 0, sizeof(float) * c.dim);
  for (int64_t w = 0; w < c.width; ++w)
    if (real[w]) axpy(share, c.in_vec + ids[w] * c.dim, x, c.dim);
  return share;
}

// Logits: l_j = x . W_j - log Q_j (when log-Q is given), the label first, then the K
// negatives; with hit removal the last negative equal to the label gets -FLT_MAX added. The
// dot products are in lg already; this adds the rest.
void finish_logits(const Chunk& c, int64_t i, float* lg) {
  const int64_t k = c.k, label = c.labels[i];
  const int64_t* negs = c.negatives + i * k;
  if (c.remove_hits) {
    for (int64_t j = k - 1; j >= 0; --j)
      if (negs[j] == label) {
        lg[j + 1] += -kFltMax;
        break;
      }
  }
  if (c.true_logq != nullptr) {
    lg[0] -= c.true_logq[i];
    for (int64_t j = 0; j < k; ++j) lg[j + 1] -= c.neg_logq[i * k + j];
  }
}

// One example's loss from its K + 1 logits lg, and into g [K + 1] dL/dlogit times scale.
// Sigmoid (NCE, NEG):  L = sum_j softplus(l_j) - l_0,  dL/dl_j = sigmoid(l_j) - [j = 0]
// Softmax:             L = logsumexp(l) - l_0,         dL/dl_j = softmax(l)_j - [j = 0]
double loss_grad(int64_t k, int softmax, const float* lg, float scale, float* g) {
  // float32 throughout, as the pure step computes; one exp per logit: with e = exp(-|l|),
  // softplus(l) = max(l, 0) + log(1 + e) and sigmoid(l) = 1/(1+e) for l >= 0, e/(1+e)
  // otherwise (no overflow either way). The logs of the K + 1 factors 1 + e, each in (1, 2],
  // are taken as one log of their product (the loss is reported, not differentiated).
  double loss = 0.0;
  if (!softmax) {
    double product = 1.0;
    for (int64_t j = 0; j <= k; ++j) {
      const float e = std::exp(-std::fabs(lg[j]));
      loss += lg[j] > 0.0F ? lg[j] : 0.0F;
      product *= 1.0 + static_cast<double>(e);
      g[j] = (lg[j] >= 0.0F ? 1.0F : e) / (1.0F + e);
    }
    loss += std::log(product) - lg[0];
  } else {
    float top = lg[0];
    for (int64_t j = 1; j <= k; ++j) top = lg[j] > top ? lg[j] : top;
    float total = 0.0F;
    for (int64_t j = 0; j <= k; ++j) {
      g[j] = std::exp(lg[j] - top);
      total += g[j];
    }
    for (int64_t j = 0; j <= k; ++j) g[j] /= total;
    loss = top + std::log(total) - lg[0];
  }
  g[0] -= 1.0F;
  for (int64_t j = 0; j <= k; ++j) g[j] *= scale;
  return loss;
}

// One example's loss, and into g [K + 1] the gradient dL/dlogit times scale (lg: scratch
// for the K + 1 logits).
double example_grad(const Chunk& c, int64_t i, const float* x, float scale, float* g,
                    float* lg) {
  const int64_t k = c.k;
  const int64_t* negs = c.negatives + i * k;
  lg[0] = dot(x, c.out_vec + c.labels[i] * c.dim, c.dim);
  for (int64_t j = 0; j < k; ++j) lg[j + 1] = dot(x, c.out_vec + negs[j] * c.dim, c.dim);
  finish_logits(c, i, lg);
  return loss_grad(k, c.softmax, lg, scale, g);
}

// Trains examples [0, c.n) one after the other; example i at rate lr(i). Returns the loss.
template <typename Rate>
double train(const Chunk& c, int64_t n, Rate lr) {
  const int64_t k = c.k, dim = c.dim;
  std::vector<float> x(dim), gx(dim), g(k + 1), logits(k + 1);
  std::vector<float*> rows(k + 1);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n)
      prefetch_rows(c.in_vec, c.out_vec, c.inputs, c.width, c.labels, c.negatives, k,
                    i + kAhead, dim);
    const float share = input_vector(c, i, x.data());
    total += example_grad(c, i, x.data(), -lr(i), g.data(), logits.data());
    rows[0] = c.out_vec + c.labels[i] * dim;
    for (int64_t j = 0; j < k; ++j) rows[j + 1] = c.out_vec + c.negatives[i * k + j] * dim;
    // dL/dx = sum_j g_j W_j from the rows before this example's update, then W_j += g_j x.
    // One pass over each row when the rows are distinct; two when one repeats, so that
    // dL/dx never sees a row this example has already updated.
    std::memset(gx.data(), 0, sizeof(float) * dim);
    if (distinct(rows.data(), k + 1)) {
      for (int64_t j = 0; j <= k; ++j) axpy_both(g[j], rows[j], x.data(), gx.data(), dim);
    } else {
      for (int64_t j = 0; j <= k; ++j) axpy(g[j], rows[j], gx.data(), dim);
      for (int64_t j = 0; j <= k; ++j) axpy(g[j], x.data(), rows[j], dim);
    }
    // The input rows += dL/dx (each context row its share of the mean's gradient).
    const int64_t* ids = c.inputs + i * c.width;
    for (int64_t w = 0; w < c.width; ++w)
      if (c.mask == nullptr || c.mask[i * c.width + w])
        axpy(share, gx.data(), c.in_vec + ids[w] * dim, dim);
  }
  return total;
}

// A skip-gram window: the context ids of one centre and the negatives of its examples
// ([m, K], consecutive runs of `share` examples sharing a set).
struct Window {
  std::vector<int64_t> context;
  std::vector<int64_t> negatives;
};

// Makes the window of the first centre at or after position `from` that has a context word,
// into w; returns its position (n when none is left). Draws its negatives from rng.
int64_t make_window(const int64_t* ids, const int64_t* lines, const int64_t* reach, int64_t n,
                    int64_t from, int64_t k, int64_t share, const double* threshold,
                    const int64_t* alias, int64_t vocab, Xoshiro256& rng, Window& w) {
  for (int64_t p = from; p < n; ++p) {
    w.context.clear();
    for (int64_t d = 1; d <= reach[p]; ++d)
      for (const int64_t q : {p - d, p + d})
        if (q >= 0 && q < n && lines[q] == lines[p]) w.context.push_back(ids[q]);
    const int64_t m = static_cast<int64_t>(w.context.size());
    if (m == 0) continue;
    w.negatives.resize(m * k);
    const int64_t group = share > 0 ? share : m;  // 0: the whole window shares one set
    for (int64_t i = 0; i < m; ++i)  // a group's first example draws, the others reuse them
      for (int64_t j = 0; j < k; ++j)
        w.negatives[i * k + j] = i % group != 0 ? w.negatives[(i - i % group) * k + j]
                                                : alias_draw(rng, threshold, alias, vocab);
    return p;
  }
  return n;
}

// Asks for the rows of window w (centre `centre`) ahead of their use.
void prefetch_window(const Window& w, const float* in_vec, const float* out_vec,
                     int64_t centre, int64_t k, int64_t dim) {
#if defined(__SSE__)
  const int64_t lines = (dim * 4 + 63) / 64;
  auto fetch = [lines](const float* row) {
    for (int64_t l = 0; l < lines; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(row) + 64 * l, _MM_HINT_T0);
  };
  fetch(out_vec + centre * dim);
  const int64_t m = static_cast<int64_t>(w.context.size());
  for (int64_t i = 0; i < m; ++i) fetch(in_vec + w.context[i] * dim);
  for (int64_t i = 0; i < m * k; ++i)
    if (i < k || w.negatives[i] != w.negatives[i - k]) fetch(out_vec + w.negatives[i] * dim);
#else
  (void)w, (void)in_vec, (void)out_vec, (void)centre, (void)k, (void)dim;
#endif
}

// One skip-gram window as one batch computed from the tables as they are at its start: m
// examples, input X_i = in_vec[c.inputs[i]], label the centre's row W_0 = out_vec[centre],
// negatives c.negatives [m, K]. Gradients first (dL/dX_i = sum_j g_ij W_ij into gx [m, dim]),
// then W_ij += g_ij X_i (X_i as at the start), then X_i += dL/dX_i. g: scratch [m, K + 1],
// lg: scratch [K + 1]. Returns the summed loss.
double window_generic(const Chunk& c, int64_t m, int64_t centre, float scale, float* g,
                      float* gx, float* lg) {
  const int64_t k = c.k, dim = c.dim, rows = k + 1;
  const float* in_vec = c.in_vec;
  float* out_vec = c.out_vec;
  double total = 0.0;
  std::memset(gx, 0, sizeof(float) * m * dim);
  for (int64_t i = 0; i < m; ++i) {
    const float* x = in_vec + c.inputs[i] * dim;
    float* gi = g + i * rows;
    total += example_grad(c, i, x, scale, gi, lg);
    axpy(gi[0], out_vec + centre * dim, gx + i * dim, dim);
    for (int64_t j = 0; j < k; ++j)
      axpy(gi[j + 1], out_vec + c.negatives[i * k + j] * dim, gx + i * dim, dim);
  }
  for (int64_t i = 0; i < m; ++i) {
    const float* x = in_vec + c.inputs[i] * dim;
    const float* gi = g + i * rows;
    axpy(gi[0], x, out_vec + centre * dim, dim);
    for (int64_t j = 0; j < k; ++j) axpy(gi[j + 1], x, out_vec + c.negatives[i * k + j] * dim, dim);
  }
  for (int64_t i = 0; i < m; ++i) axpy(1.0F, gx + i * dim, c.in_vec + c.inputs[i] * dim, dim);
  return total;
}

#if defined(__AVX512F__)
// The same window with every row of dim <= 16 NV floats held in NV registers: each example's
// input row is loaded once for its K + 1 dot products and its gradient accumulated in
// registers; the centre's row is read and written once per window (its m updates summed in
// registers first). A negative equal to the centre goes into that sum too.
template <int NV>
struct Row {
  __m512 v[NV];

  static __mmask16 tail(int64_t dim) {
    const int64_t last = dim - 16 * (NV - 1);
    return last >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1U << last) - 1U);
  }
  void load(const float* p, __mmask16 t) {
    for (int q = 0; q + 1 < NV; ++q) v[q] = _mm512_loadu_ps(p + 16 * q);
    v[NV - 1] = _mm512_maskz_loadu_ps(t, p + 16 * (NV - 1));
  }
  void store(float* p, __mmask16 t) const {
    for (int q = 0; q + 1 < NV; ++q) _mm512_storeu_ps(p + 16 * q, v[q]);
    _mm512_mask_storeu_ps(p + 16 * (NV - 1), t, v[NV - 1]);
  }
  void zero() {
    for (int q = 0; q < NV; ++q) v[q] = _mm512_setzero_ps();
  }
  float dot(const float* p, __mmask16 t) const {  // this . p
    __m512 s = _mm512_mul_ps(v[0], NV == 1 ? _mm512_maskz_loadu_ps(t, p) : _mm512_loadu_ps(p));
    for (int q = 1; q + 1 < NV; ++q) s = _mm512_fmadd_ps(v[q], _mm512_loadu_ps(p + 16 * q), s);
    if (NV > 1) s = _mm512_fmadd_ps(v[NV - 1], _mm512_maskz_loadu_ps(t, p + 16 * (NV - 1)), s);
    return _mm512_reduce_add_ps(s);
  }
  void add(float a, const float* p, __mmask16 t) {  // this += a * p
    const __m512 va = _mm512_set1_ps(a);
    for (int q = 0; q + 1 < NV; ++q) v[q] = _mm512_fmadd_ps(va, _mm512_loadu_ps(p + 16 * q), v[q]);
    v[NV - 1] = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(t, p + 16 * (NV - 1)), v[NV - 1]);
  }
  void add(float a, const Row& r) {  // this += a * r
    const __m512 va = _mm512_set1_ps(a);
    for (int q = 0; q < NV; ++q) v[q] = _mm512_fmadd_ps(va, r.v[q], v[q]);
  }
  void add_to(float a, float* p, __mmask16 t) const {  // p += a * this
    const __m512 va = _mm512_set1_ps(a);
    for (int q = 0; q + 1 < NV; ++q)
      _mm512_storeu_ps(p + 16 * q, _mm512_fmadd_ps(va, v[q], _mm512_loadu_ps(p + 16 * q)));
    float* last = p + 16 * (NV - 1);
    _mm512_mask_storeu_ps(last, t, _mm512_fmadd_ps(va, v[NV - 1], _mm512_maskz_loadu_ps(t, last)));
  }
};

// exp(x) for x <= 0 in 16 lanes: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor
// polynomial of degree 6 (relative error below 2e-7), times 2^n. Very negative x gives 0.
__m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-200.0F));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341F)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125F), x);  // ln 2, high bits
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-06F), r);  // and the rest
  __m512 poly = _mm512_set1_ps(1.0F / 720.0F);
  for (const float c : {1.0F / 120.0F, 1.0F / 24.0F, 1.0F / 6.0F, 0.5F, 1.0F, 1.0F})
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(poly, n);
}

// The losses of examples summed as sum(terms) + log(prod(factors)), so that the log is
// taken once in a while instead of once per example (each factor is at most 2^16).
struct LossSum {
  double terms = 0.0, factors = 1.0, logs = 0.0;
  void add(double term, double factor) {
    terms += term;
    factors *= factor;
    if (factors > 1e250) {
      logs += std::log(factors);
      factors = 1.0;
    }
  }
  double value() const { return terms + logs + std::log(factors); }
};

// loss_grad for K + 1 <= 16 logits held in one vector l (lanes past K are ignored): the same
// formulas. Returns the gradient dL/dl times scale; adds the loss to sum.
__m512 vector_loss_grad(__m512 l, int64_t k, int softmax, float scale, LossSum& sum) {
  const __mmask16 m = static_cast<__mmask16>((1U << (k + 1)) - 1U);
  const __m512 one = _mm512_set1_ps(1.0F), zero = _mm512_setzero_ps();
  const float label = _mm512_cvtss_f32(l);
  __m512 grad;
  if (!softmax) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(zero, _mm512_abs_ps(l)));
    const __m512 one_e = _mm512_add_ps(one, e);  // each in (1, 2]
    const __mmask16 positive = _mm512_cmp_ps_mask(l, zero, _CMP_GE_OQ);
    grad = _mm512_div_ps(_mm512_mask_blend_ps(positive, e, one), one_e);
    const float relu = _mm512_mask_reduce_add_ps(m, _mm512_max_ps(l, zero));
    sum.add(static_cast<double>(relu) - label, _mm512_mask_reduce_mul_ps(m, one_e));
  } else {
    const float top = _mm512_mask_reduce_max_ps(m, l);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(l, _mm512_set1_ps(top))));
    const float total = _mm512_reduce_add_ps(e);  // in [1, K + 1]
    grad = _mm512_div_ps(e, _mm512_set1_ps(total));
    sum.add(static_cast<double>(top) - label, total);
  }
  grad = _mm512_mask_sub_ps(grad, 1, grad, one);  // lane 0, the label: minus 1
  return _mm512_mul_ps(grad, _mm512_set1_ps(scale));
}

// finish_logits on a vector of K + 1 <= 16 logits.
__m512 vector_finish_logits(const Chunk& c, int64_t i, __m512 l) {
  const int64_t k = c.k, label = c.labels[i];
  const int64_t* negs = c.negatives + i * k;
  if (c.remove_hits) {
    for (int64_t j = k - 1; j >= 0; --j)
      if (negs[j] == label) {
        const auto lane = static_cast<__mmask16>(1U << (j + 1));
        l = _mm512_mask_add_ps(l, lane, l, _mm512_set1_ps(-kFltMax));
        break;
      }
  }
  if (c.true_logq != nullptr) {
    const auto negatives = static_cast<__mmask16>(((1U << k) - 1U) << 1);
    __m512 q = _mm512_maskz_expandloadu_ps(negatives, c.neg_logq + i * k);
    q = _mm512_mask_broadcastss_ps(q, 1, _mm_set_ss(c.true_logq[i]));
    l = _mm512_sub_ps(l, q);
  }
  return l;
}

template <int NV>
double window_registers(const Chunk& c, int64_t m, int64_t group, int64_t centre, float scale,
                        float* g, float* gx, float* lg) {
  const int64_t k = c.k, dim = c.dim, rows = k + 1;
  const __mmask16 t = Row<NV>::tail(dim);
  float* out_vec = c.out_vec;
  float* w0 = out_vec + centre * dim;
  LossSum sum;
  Row<NV> x, acc;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t* negs = c.negatives + i * k;
    x.load(c.in_vec + c.inputs[i] * dim, t);
    float* gi = g + i * rows;
    if (k < 16) {  // the K + 1 logits in one vector, never stored
      __m512 l = _mm512_mask_broadcastss_ps(_mm512_setzero_ps(), 1, _mm_set_ss(x.dot(w0, t)));
      for (int64_t j = 0; j < k; ++j)
        l = _mm512_mask_broadcastss_ps(l, static_cast<__mmask16>(1U << (j + 1)),
                                       _mm_set_ss(x.dot(out_vec + negs[j] * dim, t)));
      l = vector_finish_logits(c, i, l);
      _mm512_mask_storeu_ps(gi, static_cast<__mmask16>((1U << rows) - 1U),
                            vector_loss_grad(l, k, c.softmax, scale, sum));
    } else {
      lg[0] = x.dot(w0, t);
      for (int64_t j = 0; j < k; ++j) lg[j + 1] = x.dot(out_vec + negs[j] * dim, t);
      finish_logits(c, i, lg);
      sum.add(loss_grad(k, c.softmax, lg, scale, gi), 1.0);
    }
    acc.zero();
    acc.add(gi[0], w0, t);
    for (int64_t j = 0; j < k; ++j) acc.add(gi[j + 1], out_vec + negs[j] * dim, t);
    acc.store(gx + i * dim, t);
  }
  // The centre's row: its m updates summed in registers.
  Row<NV> w;
  w.load(w0, t);
  for (int64_t i = 0; i < m; ++i) w.add(g[i * rows], c.in_vec + c.inputs[i] * dim, t);
  // A run of `group` examples shares its negatives: each negative row is read and written
  // once for the run, its updates from the run's examples summed in registers.
  for (int64_t a = 0; a < m; a += group) {
    const int64_t b = a + group < m ? a + group : m;
    const int64_t* negs = c.negatives + a * k;
    for (int64_t j = 0; j < k; ++j) {
      if (negs[j] == centre) {  // a negative equal to the centre joins the centre's sum
        for (int64_t i = a; i < b; ++i) w.add(g[i * rows + j + 1], c.in_vec + c.inputs[i] * dim, t);
        continue;
      }
      x.load(out_vec + negs[j] * dim, t);
      for (int64_t i = a; i < b; ++i) x.add(g[i * rows + j + 1], c.in_vec + c.inputs[i] * dim, t);
      x.store(out_vec + negs[j] * dim, t);
    }
  }
  w.store(w0, t);
  for (int64_t i = 0; i < m; ++i) {
    acc.load(gx + i * dim, t);
    acc.add_to(1.0F, c.in_vec + c.inputs[i] * dim, t);
  }
  return sum.value();
}
#endif

// The window with the register-held rows where the rows fit in 8 AVX-512 registers.
// group: the examples [a, a + group) share their negatives (the window's are made so).
double train_window(const Chunk& c, int64_t m, int64_t group, int64_t centre, float scale,
                    float* g, float* gx, float* lg) {
#if defined(__AVX512F__)
  switch ((c.dim + 15) / 16) {
    case 1: return window_registers<1>(c, m, group, centre, scale, g, gx, lg);
    case 2: return window_registers<2>(c, m, group, centre, scale, g, gx, lg);
    case 3: return window_registers<3>(c, m, group, centre, scale, g, gx, lg);
    case 4: return window_registers<4>(c, m, group, centre, scale, g, gx, lg);
    case 5: return window_registers<5>(c, m, group, centre, scale, g, gx, lg);
    case 6: return window_registers<6>(c, m, group, centre, scale, g, gx, lg);
    case 7: return window_registers<7>(c, m, group, centre, scale, g, gx, lg);
    case 8: return window_registers<8>(c, m, group, centre, scale, g, gx, lg);
    default: break;
  }
#endif
  return window_generic(c, m, centre, scale, g, gx, lg);
}

}  // namespace

extern "C" {

// Trains examples [0, n), batch b (examples [b * batch, (b + 1) * batch)) at rate lrs[b];
// adds the summed loss to *loss. Returns 0.
int torchnce_word2vec_batches(float* in_vec, float* out_vec, int64_t dim,
                              const int64_t* inputs, int64_t width, const uint8_t* mask,
                              const int64_t* labels, const int64_t* negatives, int64_t k,
                              const float* true_logq, const float* neg_logq, int softmax,
                              int remove_hits, int64_t n, int64_t batch, const float* lrs,
                              double* loss) {
  const Chunk c{in_vec, out_vec,  dim,       inputs,   width,   mask,       labels,
                negatives, k,     true_logq, neg_logq, softmax, remove_hits};
  *loss += train(c, n, [lrs, batch](int64_t i) { return lrs[i / batch]; });
  return 0;
}

// Skip-gram over one chunk of (subsampled) tokens, by windows (after HogBatch: Ji et al.,
// "Parallelizing word2vec in shared and distributed memory", arXiv:1604.04661). The centre at
// position p and the m words at distance d <= reach[p] on its line give m examples, in
// word2vec.c's orientation: input the context word's vector X_i, label the centre. Each run of
// `share` consecutive examples of a window (the whole window for 0; 1 is word2vec's own, a
// set per example) shares K negatives drawn from the alias table (threshold, alias) with
// xoshiro256** seeded by `seed`: fewer draws, and fewer distinct rows read and written per
// window (they stay in the cache from one example to the next). The window's m examples are one
// batch computed from the tables as they are at its start: the public loss with per-example
// candidates ``[m, K]`` and one SGD step, which the tests check; the centre's row is read once
// and written once per window (train_window).
//   l_ij = X_i . W_ij - log Q_ij (j = 0 the centre; log-Q optional, Q_c = probs[c] * K; hit
//   removal: the last negative equal to the centre gets -FLT_MAX), loss and dL/dl as
//   example_grad (g times -lr), then X_i += sum_j g_ij W_ij and W_ij += g_ij X_i.
// The rate falls linearly over the chunk's positions from lr_first to lr_last, never below
// lr_floor. Adds the loss to *loss and the number of examples to *count.
int torchnce_word2vec_skipgram(float* in_vec, float* out_vec, int64_t dim, const int64_t* ids,
                               const int64_t* lines, const int64_t* reach, int64_t n,
                               const double* threshold, const int64_t* alias,
                               const float* probs, int64_t vocab, int64_t k, int log_q,
                               int softmax, int remove_hits, float lr_first, float lr_last,
                               float lr_floor, uint64_t seed, int64_t share, double* loss,
                               int64_t* count) {
  Xoshiro256 rng(seed);
  const int64_t rows = k + 1;
  // Windows are made one ahead of their training (contexts and negatives, the draws in the
  // same order as making each just before its use), so that the next window's rows are
  // fetched into the cache while this one trains: the rows are random, and without this
  // every one is a cache miss the loop waits for.
  Window windows[2];
  int64_t next = make_window(ids, lines, reach, n, 0, k, share, threshold, alias, vocab, rng,
                             windows[0]);
  std::vector<int64_t> labels;
  std::vector<float> true_logq, neg_logq, g, lg(rows), gx;
  double total = 0.0;
  int64_t examples = 0;
  for (int64_t slot = 0; next < n; slot ^= 1) {
    const Window& w = windows[slot];
    const int64_t p = next;
    next = make_window(ids, lines, reach, n, p + 1, k, share, threshold, alias, vocab, rng,
                       windows[slot ^ 1]);
    if (next < n) prefetch_window(windows[slot ^ 1], in_vec, out_vec, ids[next], k, dim);
    const std::vector<int64_t>& context = w.context;
    const std::vector<int64_t>& negatives = w.negatives;
    const int64_t m = static_cast<int64_t>(context.size());
    labels.assign(m, ids[p]);
    if (log_q) {
      true_logq.assign(m, std::log(probs[ids[p]] * k));
      neg_logq.resize(m * k);
      for (int64_t i = 0; i < m * k; ++i) neg_logq[i] = std::log(probs[negatives[i]] * k);
    }
    const Chunk c{in_vec, out_vec, dim, context.data(), 1, nullptr, labels.data(),
                  negatives.data(), k, log_q ? true_logq.data() : nullptr,
                  log_q ? neg_logq.data() : nullptr, softmax, remove_hits};
    const float lr = lr_first + (lr_last - lr_first) * static_cast<float>(p) / n;
    const float scale = -(lr > lr_floor ? lr : lr_floor);
    g.resize(m * rows);
    gx.resize(m * dim);
    total += train_window(c, m, share > 0 ? share : m, ids[p], scale, g.data(), gx.data(),
                          lg.data());
    examples += m;
  }
  *loss += total;
  *count += examples;
  return 0;
}

}  // extern "C"
