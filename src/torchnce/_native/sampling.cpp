// Draws from a Walker alias table, the native twin of the pure-PyTorch draw of
// src/torchnce/_sampling/tables.py (same distribution, its own random stream: xoshiro.h).
//   threshold float64 [n], alias int64 [n], out int64 [count]; the binding checks them.

#include <cstdint>

#include "xoshiro.h"

extern "C" {

int torchnce_alias_draws(const double* threshold, const int64_t* alias, int64_t n,
                         int64_t count, uint64_t seed, int64_t* out) {
  torchnce_native::Xoshiro256 rng(seed);
  for (int64_t i = 0; i < count; ++i)
    out[i] = torchnce_native::alias_draw(rng, threshold, alias, n);
  return 0;
}

}  // extern "C"
