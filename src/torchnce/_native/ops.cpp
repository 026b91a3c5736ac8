// The fused sampled-loss step as PyTorch operators (namespace torchnce_cpu), built against
// torch's headers and loaded with torch.ops.load_library (build.py, library "ops"). One call
// per forward and one per backward: the gather, the matrix products (at::mm, the BLAS), the
// per-row kernels of sampled.cpp split over torch's own thread pool (at::parallel_for, so the
// pool that ran the product does the rest instead of spinning), and in backward the row
// update of RowUpdate. sampled.py binds them; torchnce/_sampled/fused.py is the pure-PyTorch
// twin, and the tests compare the two.
//
//   sl_forward(inputs, weight, bias?, ids?, b_ids?, log_q_true?, log_q_sampled?, hits?, label_mask?,
//              num_true, width, softmax, take_log) -> (loss [B], dL/dlogits [B, T+S],
//              rows [N, D]); take_log: the log_q arguments are counts, their logs are taken
//   sl_backward(dlogits, grad_loss?, divisor, x, rows, num_true, width, need_x, need_rows,
//               need_bias) -> (dL/dx, dL/drows [N, D], dL/dbias_rows [N]), empty if not needed
//   sl_backward_update(dlogits!, grad_loss, divisor, x, rows, ids, num_true, width, need_x,
//                      weight!, bias!?, weight_state!?, bias_state!?, kind, lr, eps) -> dL/dx
//   row_update(kind, table!, ids, grads, state!?, lr, eps) -> ()
//   update_loss(inputs, weight, bias?, ids, counts?, ..., reduction, states?, kind, lr, eps)
//       -> the reduced loss, an autograd node whose backward updates the rows (UpdateLoss)
//
// width = T + S for per-example candidates (rows [B, T+S, D] flattened), 0 for shared ones
// (rows [B*T + S, D], the true rows first). g = dlogits * grad_loss / divisor per row
// (grad_loss [B] or a scalar; g = dlogits without it), in place in sl_backward_update.
// sl_forward's rows are weight itself when ids is None and weight is contiguous (an alias its
// schema does not declare: the operators run eagerly only, never under a compiler; the op of
// torchnce/_sampled/ops.py copies them). Every argument is checked here (a bad one
// raises ValueError naming it); Python checks them first with the same messages.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <cstdint>
#include <vector>

extern "C" {
int torchnce_sl_gather(const float* table, int64_t ld, int64_t num_rows, int64_t dim,
                       const float* bias, const int64_t* ids, int64_t n, float* rows,
                       float* bias_rows);
int torchnce_sl_forward(const float* x, int64_t batch, int64_t dim, const float* rows,
                        const float* bias_rows, const float* sampled_bias, int64_t t, int64_t s,
                        int per_example, const float* sdots, const float* lq_true, int64_t lqt_b,
                        int64_t lqt_t, const float* lq_sampled, int64_t lqs_b, int64_t lqs_s,
                        const uint8_t* hits, const uint8_t* label_mask, int softmax,
                        float* dlogits, float* loss);
int torchnce_sl_backward(const float* x, int64_t batch, int64_t dim, const float* rows,
                         int64_t t, int64_t s, int per_example, const float* g, float* grad_x,
                         float* grad_rows, float* grad_bias);
int torchnce_row_update(int kind, float* table, int64_t ld, int64_t num_rows, int64_t dim,
                        const int64_t* ids, int64_t n, const float* grads, float* state,
                        float lr, float eps, int64_t* group, int64_t* slots, int64_t cap,
                        float* sums);
}

namespace {

using at::Tensor;
using c10::optional;

// Rows per task of at::parallel_for for rows costing `cost` each (about 2^18 units of work per
// task: a small step runs on the calling thread, a large one on every thread).
int64_t grain(int64_t cost) { return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(cost, 1)); }

void need_float(const Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == dims,
                    name, " must be a ", dims, "-D float32 CPU tensor, got ", t.scalar_type(),
                    " with ", t.dim(), " dimensions on ", t.device());
}

void need_ids(const Tensor& ids, int64_t num_rows) {
  TORCH_CHECK_VALUE(ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.dim() == 1 &&
                        ids.is_contiguous(),
                    "ids must be a contiguous 1-D int64 CPU tensor, got ", ids.scalar_type());
  const int64_t* p = ids.data_ptr<int64_t>();
  const int64_t n = ids.numel();
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= (p[i] >= 0) & (p[i] < num_rows);
  TORCH_CHECK_VALUE(ok, "ids must be in [0, ", num_rows, ")");
}

const uint8_t* bytes(const optional<Tensor>& t, Tensor& keep, const char* name, int64_t rows,
                     int64_t cols) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK_VALUE(t->scalar_type() == at::kBool && t->device().is_cpu(), name,
                    " must be a bool CPU tensor, got ", t->scalar_type());
  keep = t->expand({rows, cols}).contiguous();
  return reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>());
}

// A [B, K]-broadcastable float tensor as float32 (kept alive in `keep`) and its strides.
// With take_log, t holds expected counts and keep their float32 logs (torch's log, as the
// pure path takes them).
const float* strided(const optional<Tensor>& t, Tensor& keep, int64_t rows, int64_t cols,
                     int64_t& row_stride, int64_t& col_stride, bool take_log) {
  row_stride = col_stride = 0;
  if (!t.has_value()) return nullptr;
  TORCH_CHECK_VALUE(t->device().is_cpu() && t->is_floating_point(),
                    "log_q must be a floating CPU tensor");
  keep = take_log ? at::log(t->to(at::kFloat)) : t->to(at::kFloat);
  keep = keep.expand({rows, cols});
  row_stride = keep.stride(0);
  col_stride = keep.stride(1);
  return keep.data_ptr<float>();
}

std::tuple<Tensor, Tensor, Tensor> sl_forward(
    const Tensor& inputs, const Tensor& weight_in, const optional<Tensor>& bias,
    const optional<Tensor>& ids, const optional<Tensor>& b_ids, const optional<Tensor>& log_q_true,
    const optional<Tensor>& log_q_sampled, const optional<Tensor>& hits,
    const optional<Tensor>& label_mask, int64_t t, int64_t width, bool softmax, bool take_log) {
  need_float(inputs, "inputs", 2);
  need_float(weight_in, "weight", 2);
  TORCH_CHECK_VALUE(weight_in.size(1) == inputs.size(1), "weight must be [C, ", inputs.size(1),
                    "], got ", weight_in.sizes());
  TORCH_CHECK_VALUE(t >= 1, "num_true must be >= 1, got ", t);
  // the gather reads rows with unit column stride (any row stride): a transposed table is
  // copied once
  const Tensor weight = weight_in.stride(1) == 1 ? weight_in : weight_in.contiguous();
  const Tensor x = inputs.contiguous();
  const int64_t batch = x.size(0), dim = x.size(1);
  Tensor b_table;
  if (bias.has_value()) {
    need_float(*bias, "bias", 1);
    b_table = bias->contiguous();
  }
  Tensor rows, bias_rows;
  // the bias rows: bias[b_ids], gathered with the weight rows when b_ids is ids; bias itself
  // when b_ids is None (rows looked up already)
  const bool together = bias.has_value() && ids.has_value() && b_ids.has_value() &&
                        b_ids->is_same(*ids);
  if (ids.has_value()) {
    need_ids(*ids, weight.size(0));
    TORCH_CHECK_VALUE(!together || bias->size(0) == weight.size(0),
                      "bias must have one value per row of weight");
    const int64_t n = ids->numel();
    rows = at::empty({n, dim}, x.options());
    if (together) bias_rows = at::empty({n}, x.options());
    const int64_t* id = ids->data_ptr<int64_t>();
    const float* table = weight.data_ptr<float>();
    const float* bt = together ? b_table.data_ptr<float>() : nullptr;
    float* out = rows.data_ptr<float>();
    float* bout = together ? bias_rows.data_ptr<float>() : nullptr;
    const int64_t ld = weight.stride(0), num_rows = weight.size(0);
    at::parallel_for(0, n, grain(4 * dim), [&](int64_t i0, int64_t i1) {
      torchnce_sl_gather(table, ld, num_rows, dim, bt, id + i0, i1 - i0, out + i0 * dim,
                         bout == nullptr ? nullptr : bout + i0);
    });
  } else {
    rows = weight.contiguous();
  }
  if (bias.has_value() && !together) {
    if (b_ids.has_value()) {
      need_ids(*b_ids, b_table.size(0));
      bias_rows = b_table.index_select(0, *b_ids);
    } else {
      bias_rows = b_table;
    }
    TORCH_CHECK_VALUE(bias_rows.size(0) == rows.size(0), "bias must have one value per row");
  }
  const bool per_example = width > 0;
  const int64_t s = per_example ? width - t : rows.size(0) - batch * t;
  TORCH_CHECK_VALUE(s >= 0 && rows.size(0) == (per_example ? batch * width : batch * t + s),
                    "weight's rows do not match the batch, num_true and width");
  const int64_t w = t + s;
  Tensor sdots;
  if (!per_example) sdots = at::mm(x, rows.narrow(0, batch * t, s).t());
  Tensor keep_qt, keep_qs, keep_hits, keep_mask;
  int64_t qt_b, qt_t, qs_b, qs_s;
  const float* qt = strided(log_q_true, keep_qt, batch, t, qt_b, qt_t, take_log);
  const float* qs = strided(log_q_sampled, keep_qs, batch, s, qs_b, qs_s, take_log);
  TORCH_CHECK_VALUE(log_q_true.has_value() == log_q_sampled.has_value(),
                    "log_q_true and log_q_sampled must be given together");
  const uint8_t* hb = bytes(hits, keep_hits, "hits", batch, s);
  const uint8_t* mb = bytes(label_mask, keep_mask, "label_mask", batch, t);
  Tensor loss = at::empty({batch}, x.options()), dlogits = at::empty({batch, w}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* rp = rows.data_ptr<float>();
  const float* bp = bias_rows.defined() ? bias_rows.data_ptr<float>() : nullptr;
  const float* sampled_bias = (bp != nullptr && !per_example) ? bp + batch * t : nullptr;
  const float* sd = per_example ? nullptr : sdots.data_ptr<float>();
  float* dl = dlogits.data_ptr<float>();
  float* lp = loss.data_ptr<float>();
  const int64_t own = per_example ? w : t;  // rows of each example in `rows`
  at::parallel_for(0, batch, grain(8 * w + own * dim), [&](int64_t b0, int64_t b1) {
    torchnce_sl_forward(xp + b0 * dim, b1 - b0, dim, rp + b0 * own * dim,
                        bp == nullptr ? nullptr : bp + b0 * own, sampled_bias, t, s,
                        per_example ? 1 : 0, sd == nullptr ? nullptr : sd + b0 * s,
                        qt == nullptr ? nullptr : qt + b0 * qt_b, qt_b, qt_t,
                        qs == nullptr ? nullptr : qs + b0 * qs_b, qs_b, qs_s,
                        hb == nullptr ? nullptr : hb + b0 * s,
                        mb == nullptr ? nullptr : mb + b0 * t, softmax ? 1 : 0, dl + b0 * w,
                        lp + b0);
  });
  return {loss, dlogits, rows};
}

// g = dlogits * grad_loss / divisor per row, into `out` (which may be dlogits).
void scale_rows(const Tensor& dlogits, const Tensor& grad_loss, int64_t divisor, Tensor& out) {
  const int64_t batch = dlogits.size(0), w = dlogits.size(1);
  const Tensor gl = grad_loss.to(at::kFloat).contiguous();
  TORCH_CHECK_VALUE(gl.numel() == 1 || (gl.dim() == 1 && gl.size(0) == batch),
                    "grad_loss must be a scalar or [", batch, "]");
  const float* gp = gl.data_ptr<float>();
  const bool scalar = gl.numel() == 1 && gl.dim() != 1;
  const float* src = dlogits.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float div = static_cast<float>(divisor);
  at::parallel_for(0, batch, grain(w), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float f = scalar ? gp[0] : gp[b];
      if (divisor != 1) f = f / div;
      for (int64_t k = 0; k < w; ++k) dst[b * w + k] = src[b * w + k] * f;
    }
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_impl(
    const Tensor& dlogits, const optional<Tensor>& grad_loss, int64_t divisor, bool in_place,
    const Tensor& x_in, const Tensor& rows_in, int64_t t, int64_t width, bool need_x,
    bool need_rows, bool need_bias) {
  need_float(dlogits, "dlogits", 2);
  need_float(x_in, "x", 2);
  need_float(rows_in, "rows", 2);
  TORCH_CHECK_VALUE(divisor >= 1, "divisor must be >= 1, got ", divisor);
  const Tensor x = x_in.contiguous(), rows = rows_in.contiguous();
  const int64_t batch = x.size(0), dim = x.size(1), w = dlogits.size(1);
  const bool per_example = width > 0;
  const int64_t s = w - t;
  TORCH_CHECK_VALUE(dlogits.size(0) == batch && s >= 0 && rows.size(1) == dim &&
                        rows.size(0) == (per_example ? batch * w : batch * t + s),
                    "dlogits, x and rows do not match");
  Tensor g;
  if (grad_loss.has_value()) {
    TORCH_CHECK_VALUE(!in_place || dlogits.is_contiguous(), "dlogits must be contiguous");
    g = in_place ? dlogits : at::empty_like(dlogits, at::MemoryFormat::Contiguous);
    scale_rows(dlogits.contiguous(), *grad_loss, divisor, g);
  } else {
    g = dlogits.contiguous();
  }
  const int64_t n = rows.size(0), n_true = batch * t;
  Tensor grad_x = at::empty({need_x ? batch : 0, need_x ? dim : 0}, x.options());
  Tensor grad_rows = at::empty({need_rows ? n : 0, need_rows ? dim : 0}, x.options());
  Tensor grad_bias;
  if (per_example) {
    // the gradients of the bias rows are g itself (a copy where g is an input)
    grad_bias = !need_bias ? at::empty({0}, x.options())
                : g.is_same(dlogits) ? g.reshape({-1}).clone() : g.reshape({-1});
  } else {
    grad_bias = at::empty({need_bias ? n : 0}, x.options());
    const Tensor g_s = g.narrow(1, t, s);
    if (need_x) at::mm_out(grad_x, g_s, rows.narrow(0, n_true, s));
    if (need_rows) {
      Tensor tail = grad_rows.narrow(0, n_true, s);
      at::mm_out(tail, g_s.t(), x);
    }
    if (need_bias) {
      Tensor tail = grad_bias.narrow(0, n_true, s);
      at::sum_out(tail, g_s, {0});
    }
  }
  const float* xp = x.data_ptr<float>();
  const float* rp = rows.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* gx = need_x ? grad_x.data_ptr<float>() : nullptr;
  float* gr = need_rows ? grad_rows.data_ptr<float>() : nullptr;
  float* gb = (need_bias && !per_example) ? grad_bias.data_ptr<float>() : nullptr;
  const int64_t own = per_example ? w : t;
  if (gx != nullptr || gr != nullptr || gb != nullptr) {
    at::parallel_for(0, batch, grain(2 * own * dim + w), [&](int64_t b0, int64_t b1) {
      torchnce_sl_backward(xp + b0 * dim, b1 - b0, dim, rp + b0 * own * dim, t, s,
                           per_example ? 1 : 0, gp + b0 * w,
                           gx == nullptr ? nullptr : gx + b0 * dim,
                           gr == nullptr ? nullptr : gr + b0 * own * dim,
                           gb == nullptr ? nullptr : gb + b0 * own);
    });
  }
  return {g, grad_x, grad_rows, grad_bias};
}

std::tuple<Tensor, Tensor, Tensor> sl_backward(
    const Tensor& dlogits, const optional<Tensor>& grad_loss, int64_t divisor, const Tensor& x,
    const Tensor& rows, int64_t t, int64_t width, bool need_x, bool need_rows, bool need_bias) {
  auto [g, grad_x, grad_rows, grad_bias] = backward_impl(
      dlogits, grad_loss, divisor, false, x, rows, t, width, need_x, need_rows, need_bias);
  return {grad_x, grad_rows, grad_bias};
}

constexpr int64_t kSgd = 0, kAdagrad = 1, kRowwise = 2;

// The checks of a row update of `table` with its accumulator `state` (before anything
// changes).
void check_update(int64_t kind, const Tensor& table, const optional<Tensor>& state) {
  TORCH_CHECK_VALUE(kind >= kSgd && kind <= kRowwise, "kind must be 0, 1 or 2, got ", kind);
  TORCH_CHECK_VALUE(table.device().is_cpu() && table.scalar_type() == at::kFloat &&
                        (table.dim() == 1 || table.dim() == 2) &&
                        table.stride(table.dim() - 1) == 1,
                    "table must be a float32 CPU tensor of 1 or 2 dimensions with unit "
                    "column stride");
  const int64_t dim = table.dim() == 2 ? table.size(1) : 1;
  if (kind != kSgd)
    TORCH_CHECK_VALUE(state.has_value() && state->scalar_type() == at::kFloat &&
                          state->is_contiguous() &&
                          state->numel() == (kind == kAdagrad ? table.size(0) * dim
                                                              : table.size(0)),
                      "state must be a contiguous float32 accumulator for the table");
}

void update_impl(int64_t kind, Tensor& table, const Tensor& ids, const Tensor& grads_in,
                 const optional<Tensor>& state, double lr, double eps) {
  check_update(kind, table, state);
  need_ids(ids, table.size(0));
  const int64_t n = ids.numel(), dim = table.dim() == 2 ? table.size(1) : 1;
  const Tensor grads = grads_in.contiguous();
  TORCH_CHECK_VALUE(grads.scalar_type() == at::kFloat && grads.numel() == n * dim,
                    "grads must be float32 with one row per id");
  float* st = kind != kSgd ? state->data_ptr<float>() : nullptr;
  const int64_t ld = table.dim() == 2 ? table.stride(0) : 1;
  float* tp = table.data_ptr<float>();
  const int64_t* id = ids.data_ptr<int64_t>();
  const float* gp = grads.data_ptr<float>();
  const float flr = static_cast<float>(lr), feps = static_cast<float>(eps);
  if (kind == kSgd) {
    // Each task owns the rows id % parts in its range and applies their occurrences in order,
    // so repeats add up exactly as in one sequential pass.
    const int64_t parts = n * dim >= (int64_t{1} << 16) ? at::get_num_threads() : 1;
    if (parts == 1) {
      torchnce_row_update(0, tp, ld, table.size(0), dim, id, n, gp, nullptr, flr, feps, nullptr,
                          nullptr, 0, nullptr);
      return;
    }
    at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t part = id[i] % parts;
        if (part < p0 || part >= p1) continue;
        torchnce_row_update(0, tp, ld, table.size(0), dim, id + i, 1, gp + i * dim, nullptr, flr,
                            feps, nullptr, nullptr, 0, nullptr);
      }
    });
    return;
  }
  int64_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  std::vector<int64_t> group(static_cast<size_t>(n)), slots(static_cast<size_t>(cap));
  std::vector<float> sums(static_cast<size_t>(n * dim));
  torchnce_row_update(static_cast<int>(kind), tp, ld, table.size(0), dim, id, n, gp, st, flr,
                      feps, group.data(), slots.data(), cap, sums.data());
}

void row_update(int64_t kind, Tensor table, const Tensor& ids, const Tensor& grads,
                const optional<Tensor>& state, double lr, double eps) {
  update_impl(kind, table, ids, grads, state, lr, eps);
}

Tensor sl_backward_update(Tensor dlogits, const Tensor& grad_loss, int64_t divisor,
                          const Tensor& x, const Tensor& rows, const Tensor& ids, int64_t t,
                          int64_t width, bool need_x, Tensor weight,
                          const optional<Tensor>& bias, const optional<Tensor>& weight_state,
                          const optional<Tensor>& bias_state, int64_t kind, double lr,
                          double eps) {
  // every check before anything changes
  TORCH_CHECK_VALUE(ids.numel() == rows.size(0), "ids must have one id per row");
  need_ids(ids, weight.size(0));
  check_update(kind, weight, weight_state);
  if (bias.has_value()) {
    need_float(*bias, "bias", 1);
    TORCH_CHECK_VALUE(bias->is_contiguous() && bias->size(0) == weight.size(0),
                      "bias must be contiguous with one value per row of weight");
    check_update(kind, *bias, bias_state);
  }
  auto [g, grad_x, grad_rows, grad_bias] = backward_impl(
      dlogits, grad_loss, divisor, true, x, rows, t, width, need_x, true, bias.has_value());
  update_impl(kind, weight, ids, grad_rows, weight_state, lr, eps);
  if (bias.has_value()) {
    Tensor b = *bias;
    update_impl(kind, b, ids, grad_bias, bias_state, lr, eps);
  }
  return grad_x;
}

// The whole step of an output layer with a RowUpdate, as one autograd node in C++: forward as
// sl_forward (the logs of the counts taken) and the module's reduction (0 none, 1 mean,
// 2 sum); backward as sl_backward_update, at most once per graph. `params` are the layer's
// parameters (inputs of the node, so that its backward runs even when `inputs` needs no
// gradient; they get none). The tables, their
// accumulators and the update's settings are kept outside the saved variables (they change
// between steps, and in this node's own backward).
class UpdateLoss : public torch::autograd::Function<UpdateLoss> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& inputs,
                        const Tensor& weight, const optional<Tensor>& bias, const Tensor& ids,
                        const optional<Tensor>& count_true, const optional<Tensor>& count_sampled,
                        const optional<Tensor>& hits, const optional<Tensor>& label_mask,
                        int64_t t, int64_t width, bool softmax, int64_t reduction,
                        const optional<Tensor>& weight_state, const optional<Tensor>& bias_state,
                        int64_t kind, double lr, double eps, at::TensorList params) {
    TORCH_CHECK_VALUE(reduction >= 0 && reduction <= 2, "reduction must be 0, 1 or 2, got ",
                      reduction);
    at::AutoDispatchBelowADInplaceOrView below;
    const Tensor x = inputs.contiguous();
    auto [loss, dlogits, rows] = sl_forward(x, weight, bias, ids, ids, count_true,
                                            count_sampled, hits, label_mask, t, width, softmax,
                                            true);
    ctx->save_for_backward({x, rows, dlogits});
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["bias"] = bias;
    ctx->saved_data["ids"] = ids;
    ctx->saved_data["weight_state"] = weight_state;
    ctx->saved_data["bias_state"] = bias_state;
    ctx->saved_data["t"] = t;
    ctx->saved_data["width"] = width;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["lr"] = lr;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["updated"] = false;
    ctx->saved_data["num_params"] = static_cast<int64_t>(params.size());
    if (reduction == 0) return loss;
    return reduction == 1 ? loss.mean() : loss.sum();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!ctx->saved_data["updated"].toBool(),
                "update: this step's rows were already updated by an earlier backward of the "
                "same graph; run a new forward for each backward");
    ctx->saved_data["updated"] = true;
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const auto table = [&](const char* name) -> optional<Tensor> {
      const c10::IValue& v = ctx->saved_data[name];
      return v.isNone() ? optional<Tensor>() : optional<Tensor>(v.toTensor());
    };
    Tensor grad_loss = grads[0].defined() ? grads[0] : at::ones({}, x.options());
    const Tensor grad_x = sl_backward_update(
        saved[2], grad_loss, reduction == 1 ? x.size(0) : 1, x, saved[1],
        ctx->saved_data["ids"].toTensor(), ctx->saved_data["t"].toInt(),
        ctx->saved_data["width"].toInt(), ctx->needs_input_grad(0),
        ctx->saved_data["weight"].toTensor(), table("bias"), table("weight_state"),
        table("bias_state"), ctx->saved_data["kind"].toInt(), ctx->saved_data["lr"].toDouble(),
        ctx->saved_data["eps"].toDouble());
    torch::autograd::variable_list out(17 + ctx->saved_data["num_params"].toInt());
    if (ctx->needs_input_grad(0)) out[0] = grad_x;
    return out;
  }
};

Tensor update_loss(const Tensor& inputs, const Tensor& weight, const optional<Tensor>& bias,
                   const Tensor& ids, const optional<Tensor>& count_true,
                   const optional<Tensor>& count_sampled, const optional<Tensor>& hits,
                   const optional<Tensor>& label_mask, int64_t t, int64_t width, bool softmax,
                   int64_t reduction, const optional<Tensor>& weight_state,
                   const optional<Tensor>& bias_state, int64_t kind, double lr, double eps,
                   at::TensorList params) {
  return UpdateLoss::apply(inputs, weight, bias, ids, count_true, count_sampled, hits,
                           label_mask, t, width, softmax, reduction, weight_state, bias_state,
                           kind, lr, eps, params);
}

}  // namespace

TORCH_LIBRARY(torchnce_cpu, m) {
  m.def("sl_forward(Tensor inputs, Tensor weight, Tensor? bias, Tensor? ids, Tensor? b_ids, "
        "Tensor? log_q_true, Tensor? log_q_sampled, Tensor? hits, Tensor? label_mask, "
        "int num_true, int width, bool softmax, bool take_log=False) -> (Tensor, Tensor, Tensor)");
  m.def("sl_backward(Tensor dlogits, Tensor? grad_loss, int divisor, Tensor x, Tensor rows, "
        "int num_true, int width, bool need_x, bool need_rows, bool need_bias) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("sl_backward_update(Tensor(a!) dlogits, Tensor grad_loss, int divisor, Tensor x, "
        "Tensor rows, Tensor ids, int num_true, int width, bool need_x, Tensor(b!) weight, "
        "Tensor(c!)? bias, Tensor(d!)? weight_state, Tensor(e!)? bias_state, int kind, "
        "float lr, float eps) -> Tensor");
  m.def("row_update(int kind, Tensor(a!) table, Tensor ids, Tensor grads, Tensor(b!)? state, "
        "float lr, float eps) -> ()");
  m.def("update_loss(Tensor inputs, Tensor weight, Tensor? bias, Tensor ids, "
        "Tensor? count_true, Tensor? count_sampled, Tensor? hits, Tensor? label_mask, "
        "int num_true, int width, bool softmax, int reduction, Tensor? weight_state, "
        "Tensor? bias_state, int kind, float lr, float eps, Tensor[] params) -> Tensor");
}

TORCH_LIBRARY_IMPL(torchnce_cpu, Autograd, m) { m.impl("update_loss", update_loss); }

TORCH_LIBRARY_IMPL(torchnce_cpu, CPU, m) {
  m.impl("sl_forward", sl_forward);
  m.impl("sl_backward", sl_backward);
  m.impl("sl_backward_update", sl_backward_update);
  m.impl("row_update", row_update);
}
