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
  for (; d + 16 <= n; d += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), s);
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
    const __m512 r = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + d), _mm512_maskz_loadu_ps(m, y + d));
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

// One example's loss, and into g [K + 1] the gradient dL/dlogit times scale.
// Logits: l_j = x . W_j - log Q_j (when log-Q is given), the label first, then the K
// negatives; with hit removal the last negative equal to the label gets -FLT_MAX added.
// Sigmoid (NCE, NEG):  L = sum_j softplus(l_j) - l_0,  dL/dl_j = sigmoid(l_j) - [j = 0]
// Softmax:             L = logsumexp(l) - l_0,         dL/dl_j = softmax(l)_j - [j = 0]
double example_grad(const Chunk& c, int64_t i, const float* x, float scale, float* g,
                    float* lg) {
  const int64_t k = c.k, label = c.labels[i];
  const int64_t* negs = c.negatives + i * k;
  lg[0] = dot(x, c.out_vec + label * c.dim, c.dim);
  for (int64_t j = 0; j < k; ++j) lg[j + 1] = dot(x, c.out_vec + negs[j] * c.dim, c.dim);
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
  // float32 throughout, as the pure step computes; one exp per logit: with e = exp(-|l|),
  // softplus(l) = max(l, 0) + log(1 + e) and sigmoid(l) = 1/(1+e) for l >= 0, e/(1+e)
  // otherwise (no overflow either way). The logs of the K + 1 factors 1 + e, each in (1, 2],
  // are taken as one log of their product (the loss is reported, not differentiated).
  double loss = 0.0;
  if (!c.softmax) {
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
// xoshiro256** seeded by `seed`: fewer distinct rows written per window, which is what lets
// Hogwild workers scale. The window's m examples are one batch computed from the tables as they are at
// its start: the public loss with per-example candidates ``[m, K]`` and one SGD step, which
// the tests check; the centre's row is read once and written once per window.
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
  std::vector<int64_t> context, labels, negatives;
  std::vector<float> true_logq, neg_logq, g, lg(rows), gx;
  double total = 0.0;
  int64_t examples = 0;
  for (int64_t p = 0; p < n; ++p) {
    context.clear();
    for (int64_t d = 1; d <= reach[p]; ++d)
      for (const int64_t q : {p - d, p + d})
        if (q >= 0 && q < n && lines[q] == lines[p]) context.push_back(ids[q]);
    const int64_t m = static_cast<int64_t>(context.size());
    if (m == 0) continue;
    labels.assign(m, ids[p]);
    negatives.resize(m * k);
    const int64_t group = share > 0 ? share : m;  // 0: the whole window shares one set
    for (int64_t i = 0; i < m; ++i)  // a group's first example draws, the others reuse them
      for (int64_t j = 0; j < k; ++j)
        negatives[i * k + j] = i % group != 0 ? negatives[(i - i % group) * k + j]
                                              : alias_draw(rng, threshold, alias, vocab);
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
    gx.assign(m * dim, 0.0F);
    // The batch's gradients, from the tables at its start: dL/dX_i = sum_j g_ij W_ij.
    for (int64_t i = 0; i < m; ++i) {
      const float* x = in_vec + context[i] * dim;
      float* gi = g.data() + i * rows;
      total += example_grad(c, i, x, scale, gi, lg.data());
      axpy(gi[0], out_vec + ids[p] * dim, gx.data() + i * dim, dim);
      for (int64_t j = 0; j < k; ++j)
        axpy(gi[j + 1], out_vec + negatives[i * k + j] * dim, gx.data() + i * dim, dim);
    }
    // The updates: W_ij += g_ij X_i (X_i as at the start), then X_i += dL/dX_i.
    for (int64_t i = 0; i < m; ++i) {
      const float* x = in_vec + context[i] * dim;
      const float* gi = g.data() + i * rows;
      axpy(gi[0], x, out_vec + ids[p] * dim, dim);
      for (int64_t j = 0; j < k; ++j)
        axpy(gi[j + 1], x, out_vec + negatives[i * k + j] * dim, dim);
    }
    for (int64_t i = 0; i < m; ++i)
      axpy(1.0F, gx.data() + i * dim, in_vec + context[i] * dim, dim);
    examples += m;
  }
  *loss += total;
  *count += examples;
  return 0;
}

}  // extern "C"
