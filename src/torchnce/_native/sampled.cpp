// The fused sampled-loss kernels (nce_loss, sampled_softmax_loss, negative_sampling_loss) on
// the CPU, float32; sampled.py binds them and checks every argument. The matrix products of
// shared candidates (x·W_sᵀ, g·W_s, gᵀ·x) stay with the caller (torch.mm, i.e. the BLAS);
// these kernels do everything around them in one pass each:
//   torchnce_sl_gather    rows [n, D] and bias rows [n] of a table for ids [n]
//   torchnce_sl_forward   logits (true dots, the given sampled dots or per-example dots, bias,
//                         hit masking, log-Q, padded labels), the loss [B] and dL/dlogits
//   torchnce_sl_backward  the parts of the gradients that are not matrix products
//   torchnce_row_update   SGD / Adagrad / row-wise Adagrad on the rows of a table (RowUpdate)
// The formulas are those of torchnce/_sampled/fused.py (row_losses), which the tests compare
// these kernels with.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr float kFltMax = 3.40282346638528859812e+38F;

float dot(const float* a, const float* b, int64_t n) {
#if defined(__AVX512F__)
  __m512 s = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), s);
  if (d < n) {
    const __mmask16 m = static_cast<__mmask16>((1U << (n - d)) - 1U);
    s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), s);
  }
  return _mm512_reduce_add_ps(s);
#else
  float s = 0.0F;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
#endif
}

// out[d] += a * v[d]
void axpy(float a, const float* v, float* out, int64_t n) {
  for (int64_t d = 0; d < n; ++d) out[d] = std::fma(a, v[d], out[d]);
}

#if defined(__AVX512F__)
// exp(x) for x <= 0 in 16 lanes (as word2vec.cpp): x = n ln 2 + r, e^r by its degree-6 Taylor
// polynomial (relative error below 2e-7), times 2^n; very negative x gives exactly 0.
__m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-200.0F));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341F)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125F), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-06F), r);
  __m512 poly = _mm512_set1_ps(1.0F / 720.0F);
  for (const float c : {1.0F / 120.0F, 1.0F / 24.0F, 1.0F / 6.0F, 0.5F, 1.0F, 1.0F})
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
  const __m512 e = _mm512_scalef_ps(poly, n);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-150.0F), _CMP_LT_OQ), e,
                              _mm512_setzero_ps());
}

double product_of_lanes(__m512d a, __m512d b) {
  alignas(64) double lanes[16];
  _mm512_store_pd(lanes, a);
  _mm512_store_pd(lanes + 8, b);
  double p = 1.0;
  for (const double v : lanes) p *= v;
  return p;
}
#endif

// Sigmoid cross entropy of one row of w logits l with targets z (given on the first t
// columns, 0 elsewhere): returns sum softplus(l) - sum z l, writes sigmoid(l) - z into g.
// softplus(l) = max(l, 0) + log(1 + e) with e = exp(-|l|); the logs of the factors 1 + e
// (each in (1, 2]) are taken as one log of their product per at most 960 factors.
double sigmoid_row(const float* l, const float* z, int64_t t, int64_t w, float* g) {
  double loss = 0.0, logs = 0.0;
  for (int64_t j = 0; j < t; ++j) loss -= static_cast<double>(z[j]) * l[j];
  int64_t j = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0F), zero = _mm512_setzero_ps();
  __m512d plo = _mm512_set1_pd(1.0), phi = _mm512_set1_pd(1.0);
  __m512 relu = zero;
  int64_t pending = 0;
  for (; j < w; j += 16) {
    const int64_t left = w - j;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                   : static_cast<__mmask16>((1U << left) - 1U);
    const __m512 v = _mm512_maskz_loadu_ps(m, l + j);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(zero, _mm512_abs_ps(v))));
    const __m512 one_e = _mm512_add_ps(one, e);
    const __mmask16 positive = _mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ);
    // numerator / (1 + e) by a reciprocal estimate and one Newton step (relative error
    // ~1e-7, as a division, at a fraction of its cost)
    __m512 inv = _mm512_rcp14_ps(one_e);
    inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(one_e, inv, _mm512_set1_ps(2.0F)));
    __m512 grad = _mm512_mul_ps(_mm512_mask_blend_ps(positive, e, one), inv);
    relu = _mm512_add_ps(relu, _mm512_max_ps(v, zero));
    plo = _mm512_mul_pd(plo, _mm512_cvtps_pd(_mm512_castps512_ps256(one_e)));
    phi = _mm512_mul_pd(phi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                                 _mm512_castps_pd(one_e), 1))));
    if (j < t) {  // the true columns: minus their targets
      const int64_t nt = t - j < 16 ? t - j : 16;
      const __mmask16 mt = static_cast<__mmask16>((1U << nt) - 1U);
      grad = _mm512_mask_sub_ps(grad, mt, grad, _mm512_maskz_loadu_ps(mt, z + j));
    }
    _mm512_mask_storeu_ps(g + j, m, grad);
    if (++pending == 60) {
      logs += std::log(product_of_lanes(plo, phi));
      plo = phi = _mm512_set1_pd(1.0);
      pending = 0;
    }
  }
  loss += static_cast<double>(_mm512_reduce_add_ps(relu));
  logs += std::log(product_of_lanes(plo, phi));
#else
  for (; j < w; ++j) {
    const float e = std::exp(-std::fabs(l[j]));
    loss += l[j] > 0.0F ? l[j] : 0.0F;
    logs += std::log1p(static_cast<double>(e));
    g[j] = (l[j] >= 0.0F ? 1.0F : e) / (1.0F + e) - (j < t ? z[j] : 0.0F);
  }
#endif
  return loss + logs;
}

// Softmax cross entropy of one row: (sum z) logsumexp(l) - sum z l, gradient
// (sum z) softmax(l) - z.
double softmax_row(const float* l, const float* z, int64_t t, int64_t w, float* g) {
  float top = l[0];
  int64_t i = 0;
#if defined(__AVX512F__)
  if (w >= 16) {
    __m512 vmax = _mm512_loadu_ps(l);
    for (i = 16; i + 16 <= w; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(l + i));
    top = _mm512_reduce_max_ps(vmax);
  }
#endif
  for (; i < w; ++i) top = l[i] > top ? l[i] : top;
  double mass = 0.0, true_part = 0.0;
  for (int64_t j = 0; j < t; ++j) {
    mass += z[j];
    true_part += static_cast<double>(z[j]) * l[j];
  }
  int64_t j = 0;
  double total = 0.0;
#if defined(__AVX512F__)
  __m512 sum = _mm512_setzero_ps();
  const __m512 vtop = _mm512_set1_ps(top);
  for (; j < w; j += 16) {
    const int64_t left = w - j;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                   : static_cast<__mmask16>((1U << left) - 1U);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, l + j), vtop)));
    sum = _mm512_add_ps(sum, e);
    _mm512_mask_storeu_ps(g + j, m, e);
  }
  total = _mm512_reduce_add_ps(sum);
#else
  for (; j < w; ++j) {
    g[j] = std::exp(l[j] - top);
    total += g[j];
  }
#endif
  const float scale = static_cast<float>(mass / total);
  for (int64_t k = 0; k < w; ++k) g[k] *= scale;
  for (int64_t k = 0; k < t; ++k) g[k] -= z[k];
  return (static_cast<double>(top) + std::log(total)) * mass - true_part;
}

// Open addressing: the group (first position) of every id among n, in O(n).
void group_ids(const int64_t* ids, int64_t n, int64_t* group, int64_t* slots, int64_t cap) {
  for (int64_t s = 0; s < cap; ++s) slots[s] = -1;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t h = static_cast<uint64_t>(ids[i]) * 0x9E3779B97F4A7C15ULL;
    int64_t s = static_cast<int64_t>(h >> 20) & (cap - 1);
    while (slots[s] >= 0 && ids[slots[s]] != ids[i]) s = (s + 1) & (cap - 1);
    if (slots[s] < 0) slots[s] = i;
    group[i] = slots[s];
  }
}

}  // namespace

extern "C" {

int torchnce_sl_gather(const float* table, int64_t ld, int64_t num_rows, int64_t dim,
                       const float* bias, const int64_t* ids, int64_t n, float* rows,
                       float* bias_rows) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= num_rows) return 1;
  constexpr int64_t kAhead = 8;  // rows between a prefetch and its copy (random rows of a
                                 // large table come from memory)
  for (int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n) {
      const char* next = reinterpret_cast<const char*>(table + ids[i + kAhead] * ld);
      for (int64_t b = 0; b < dim * static_cast<int64_t>(sizeof(float)); b += 64)
        __builtin_prefetch(next + b);
      if (bias != nullptr) __builtin_prefetch(bias + ids[i + kAhead]);
    }
    std::memcpy(rows + i * dim, table + ids[i] * ld, static_cast<size_t>(dim) * sizeof(float));
    if (bias != nullptr) bias_rows[i] = bias[ids[i]];
  }
  return 0;
}

// x [B, D]; shared: rows [B*T + S, D] (the true classes' rows first; the sampled rows enter as
// their dots sdots [B, S], x times them without bias), bias_rows [B*T] of the true classes and
// sampled_bias [S], or null; per_example: rows [B, T + S, D], bias_rows [B, T + S], sdots and
// sampled_bias unused. Log expected counts lq_true / lq_sampled by strides (null: none), hits
// [B, S] and label_mask [B, T] as bytes or null. Out: dlogits [B, T + S], loss [B]. Every
// pointer but sampled_bias is per row, so a caller may pass a range of the batch's rows.
int torchnce_sl_forward(const float* x, int64_t batch, int64_t dim, const float* rows,
                        const float* bias_rows, const float* sampled_bias, int64_t t,
                        int64_t s, int per_example, const float* sdots, const float* lq_true, int64_t lqt_b, int64_t lqt_t,
                        const float* lq_sampled, int64_t lqs_b, int64_t lqs_s,
                        const uint8_t* hits, const uint8_t* label_mask, int softmax,
                        float* dlogits, float* loss) {
  const int64_t w = t + s;
  std::vector<float> logits(static_cast<size_t>(w)), z(static_cast<size_t>(t));
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * dim;
    float* l = logits.data();
    for (int64_t j = 0; j < t; ++j) {
      const int64_t r = per_example ? b * w + j : b * t + j;
      l[j] = dot(xb, rows + r * dim, dim) + (bias_rows != nullptr ? bias_rows[r] : 0.0F);
    }
    if (per_example) {
      for (int64_t k = 0; k < s; ++k) {
        const int64_t r = b * w + t + k;
        l[t + k] = dot(xb, rows + r * dim, dim) + (bias_rows != nullptr ? bias_rows[r] : 0.0F);
      }
    } else {
      const float* sd = sdots + b * s;
      const float* sb = sampled_bias;
      float* ls = l + t;
      if (sb != nullptr) {
        for (int64_t k = 0; k < s; ++k) ls[k] = sd[k] + sb[k];
      } else {
        std::memcpy(ls, sd, static_cast<size_t>(s) * sizeof(float));
      }
    }
    // TensorFlow's order: dots and bias, then hit masking, then log-Q
    if (hits != nullptr) {
      const uint8_t* hb = hits + b * s;
      float* ls = l + t;
      for (int64_t k = 0; k < s; ++k) ls[k] += hb[k] ? -kFltMax : 0.0F;
    }
    if (lq_true != nullptr) {
      for (int64_t j = 0; j < t; ++j) l[j] -= lq_true[b * lqt_b + j * lqt_t];
      const float* q = lq_sampled + b * lqs_b;
      float* ls = l + t;
      if (lqs_s == 1) {
        for (int64_t k = 0; k < s; ++k) ls[k] -= q[k];
      } else {
        for (int64_t k = 0; k < s; ++k) ls[k] -= q[k * lqs_s];
      }
    }
    if (label_mask != nullptr) {
      int64_t real = 0;
      for (int64_t j = 0; j < t; ++j) real += label_mask[b * t + j] ? 1 : 0;
      const float target = 1.0F / static_cast<float>(real > 0 ? real : 1);
      for (int64_t j = 0; j < t; ++j) {
        const bool on = label_mask[b * t + j] != 0;
        z[j] = on ? target : 0.0F;
        if (!on) l[j] = -kFltMax;
      }
    } else {
      for (int64_t j = 0; j < t; ++j) z[j] = 1.0F / static_cast<float>(t);
    }
    const double value = softmax ? softmax_row(l, z.data(), t, w, dlogits + b * w)
                                 : sigmoid_row(l, z.data(), t, w, dlogits + b * w);
    loss[b] = static_cast<float>(value);
  }
  return 0;
}

// g [B, T + S] = dL/dlogits already scaled by the loss's incoming gradient. Shared: adds the
// true rows' part to grad_x (which holds g_s·W_s, or zeros), writes the true rows' gradients
// g_bt x_b into grad_rows[:B*T] and the true bias rows' gradients g_bt into grad_bias[:B*T]
// (the sampled rows' parts are the caller's products and column sums). Per-example:
// grad_x[b] = sum_j g_bj rows_bj (overwritten), grad_rows[b, j] = g_bj x_b, grad_bias = g.
// Any output may be null (not needed). Every pointer is per row, so a caller may pass a
// range of the batch's rows (ops.cpp splits the batch over threads).
int torchnce_sl_backward(const float* x, int64_t batch, int64_t dim, const float* rows,
                         int64_t t, int64_t s, int per_example, const float* g, float* grad_x,
                         float* grad_rows, float* grad_bias) {
  const int64_t w = t + s;
  const int64_t own = per_example ? w : t;  // rows of each example handled here
  for (int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * dim;
    if (grad_x != nullptr) {
      float* gx = grad_x + b * dim;
      if (per_example) std::memset(gx, 0, static_cast<size_t>(dim) * sizeof(float));
      for (int64_t j = 0; j < own; ++j) axpy(g[b * w + j], rows + (b * own + j) * dim, gx, dim);
    }
    if (grad_rows != nullptr)
      for (int64_t j = 0; j < own; ++j) {
        float* out = grad_rows + (b * own + j) * dim;
        const float gj = g[b * w + j];
        for (int64_t d = 0; d < dim; ++d) out[d] = gj * xb[d];
      }
    if (grad_bias != nullptr)
      for (int64_t j = 0; j < own; ++j) grad_bias[b * own + j] = g[b * w + j];
  }
  return 0;
}

// kind 0: SGD, w <- w - lr g for every occurrence (fused multiply-add, as torch's sparse add);
// 1: Adagrad, 2: row-wise Adagrad, on the summed gradient of each distinct id (summed in the
// order of the occurrences): s <- s + g^2 (row-wise: + mean(g^2)), w <- w + (g / (sqrt(s) +
// eps)) * (-lr). table [C, ld] (dim used), grads [n, dim], state as the table ([C, dim] for
// Adagrad, [C] row-wise; unused for SGD). scratch: n int64 + cap int64 (cap a power of two
// >= 2n) + n*dim floats.
int torchnce_row_update(int kind, float* table, int64_t ld, int64_t num_rows, int64_t dim,
                        const int64_t* ids, int64_t n, const float* grads, float* state,
                        float lr, float eps, int64_t* group, int64_t* slots, int64_t cap,
                        float* sums) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= num_rows) return 1;
  if (kind == 0) {
    for (int64_t i = 0; i < n; ++i) axpy(-lr, grads + i * dim, table + ids[i] * ld, dim);
    return 0;
  }
  group_ids(ids, n, group, slots, cap);
  for (int64_t i = 0; i < n; ++i) {
    float* sum = sums + group[i] * dim;
    const float* gi = grads + i * dim;
    if (group[i] == i) {
      std::memcpy(sum, gi, static_cast<size_t>(dim) * sizeof(float));
    } else {
      for (int64_t d = 0; d < dim; ++d) sum[d] += gi[d];
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (group[i] != i) continue;
    const float* sum = sums + i * dim;
    float* row = table + ids[i] * ld;
    if (kind == 1) {
      float* st = state + ids[i] * dim;
      for (int64_t d = 0; d < dim; ++d) {
        st[d] += sum[d] * sum[d];
        row[d] += (sum[d] / (std::sqrt(st[d]) + eps)) * (-lr);
      }
    } else {
      float squares = 0.0F;
      for (int64_t d = 0; d < dim; ++d) squares += sum[d] * sum[d];
      state[ids[i]] += squares / static_cast<float>(dim);
      const float std_dev = std::sqrt(state[ids[i]]) + eps;
      for (int64_t d = 0; d < dim; ++d) row[d] += (sum[d] / std_dev) * (-lr);
    }
  }
  return 0;
}

}  // extern "C"
