// xoshiro256** seeded by splitmix64 (Blackman and Vigna, https://prng.di.unimi.it), and a
// draw from a Walker alias table with it; shared by sampling.cpp and word2vec.cpp.
#pragma once

#include <cstdint>

namespace torchnce_native {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

struct Xoshiro256 {
  uint64_t s[4];
  explicit Xoshiro256(uint64_t seed) {
    for (auto& word : s) word = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  // A uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

// One id from the alias table of n columns (src/torchnce/_sampling/tables.py builds it): for
// u uniform in [0, 1), column c = floor(u n) keeps c when u n < threshold[c], else alias[c].
inline int64_t alias_draw(Xoshiro256& rng, const double* threshold, const int64_t* alias,
                          int64_t n) {
  const double u = rng.uniform() * static_cast<double>(n);
  int64_t column = static_cast<int64_t>(u);
  column = column < n ? column : n - 1;
  return u < threshold[column] ? column : alias[column];
}

}  // namespace torchnce_native
