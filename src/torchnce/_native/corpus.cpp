// The word2vec corpus pass for ASCII text: the native twin of load_corpus' tokenising,
// counting and encoding (src/torchnce/app/word2vec/corpus.py, the pure path and oracle).
//
// For ASCII text the pure path's rules come down to:
//   lines   str.splitlines: a line ends at \n, \r, \r\n, \v, \f, \x1c, \x1d or \x1e;
//   words   the regular expression [^\W\d_]+(?:'[^\W\d_]+)* on the lower-cased line: runs of
//           letters a-z, joined by single apostrophes that have a letter on both sides;
//   vocab   the words seen at least min_count times, by decreasing count, ties by byte order
//           (Python's order of ASCII strings); id = rank;
//   tokens  the corpus in order, words outside the vocabulary dropped, each with its line.
// Two calls: torchnce_corpus_scan does the work and returns a handle with the sizes, the
// binding allocates the outputs, torchnce_corpus_take copies them out and frees the handle
// (torchnce_corpus_free frees it without copying).
// And the other way, for writing vectors: torchnce_format_rows prints a float32 matrix as
// text, the values of a row as Python's f"{v:.6g}" prints them (std::to_chars' general
// format is printf's %g, which Python's 'g' follows), joined by spaces, a line per row.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

struct Scan {
  std::string lower;                  // the lower-cased text the words point into
  std::vector<std::string_view> vocab;  // kept words, by rank
  std::vector<int64_t> counts;        // their counts
  std::vector<int64_t> ids, lines;    // kept tokens
  int64_t words = 0;                  // every token, rare ones included
  int64_t chars = 0;                  // bytes of the kept words joined by '\n'
};

bool is_letter(char ch) { return ch >= 'a' && ch <= 'z'; }

// One character ends a line (a \r\n pair is one end, handled by the caller).
bool ends_line(char ch) {
  return ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f' || ch == '\x1c' || ch == '\x1d' ||
         ch == '\x1e';
}

}  // namespace

extern "C" {

// Scans text [n] (ASCII); sizes [4] receives the vocabulary size, the kept tokens, all tokens
// and the bytes of the joined vocabulary. Returns the handle, or null when out of memory.
void* torchnce_corpus_scan(const char* text, int64_t n, int64_t min_count, int64_t* sizes) {
  Scan* scan = nullptr;
  try {
    scan = new Scan();
    scan->lower.assign(text, static_cast<size_t>(n));
    for (char& ch : scan->lower)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    const char* s = scan->lower.data();
    // Tokens as (word index in first-seen order, line).
    std::unordered_map<std::string_view, int64_t> index;
    std::vector<std::string_view> seen;
    std::vector<int64_t> seen_counts, token_word, token_line;
    int64_t line = 0;
    for (int64_t i = 0; i < n;) {
      const char ch = s[i];
      if (ends_line(ch)) {
        i += (ch == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
        ++line;
        continue;
      }
      if (!is_letter(ch)) {
        ++i;
        continue;
      }
      const int64_t start = i;
      while (i < n && is_letter(s[i])) ++i;
      while (i + 1 < n && s[i] == '\'' && is_letter(s[i + 1])) {
        ++i;
        while (i < n && is_letter(s[i])) ++i;
      }
      const std::string_view word(s + start, static_cast<size_t>(i - start));
      auto [it, fresh] = index.try_emplace(word, static_cast<int64_t>(seen.size()));
      if (fresh) {
        seen.push_back(word);
        seen_counts.push_back(0);
      }
      ++seen_counts[it->second];
      token_word.push_back(it->second);
      token_line.push_back(line);
    }
    scan->words = static_cast<int64_t>(token_word.size());
    std::vector<int64_t> order(seen.size());
    for (size_t w = 0; w < order.size(); ++w) order[w] = static_cast<int64_t>(w);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return seen_counts[a] != seen_counts[b] ? seen_counts[a] > seen_counts[b] : seen[a] < seen[b];
    });
    std::vector<int64_t> rank(seen.size(), -1);
    for (const int64_t w : order) {
      if (seen_counts[w] < min_count) break;
      rank[w] = static_cast<int64_t>(scan->vocab.size());
      scan->vocab.push_back(seen[w]);
      scan->counts.push_back(seen_counts[w]);
      scan->chars += static_cast<int64_t>(seen[w].size()) + 1;
    }
    for (size_t t = 0; t < token_word.size(); ++t) {
      const int64_t r = rank[token_word[t]];
      if (r < 0) continue;
      scan->ids.push_back(r);
      scan->lines.push_back(token_line[t]);
    }
  } catch (...) {  // std::bad_alloc: the binding reports it
    delete scan;
    return nullptr;
  }
  sizes[0] = static_cast<int64_t>(scan->vocab.size());
  sizes[1] = static_cast<int64_t>(scan->ids.size());
  sizes[2] = scan->words;
  sizes[3] = scan->chars;
  return scan;
}

// Copies the scan out (words: the vocabulary joined by '\n', sizes[3] bytes; counts
// [sizes[0]]; ids and lines [sizes[1]]) and frees it. Returns 0.
int torchnce_corpus_take(void* handle, char* words, int64_t* counts, int64_t* ids,
                         int64_t* lines) {
  Scan* scan = static_cast<Scan*>(handle);
  for (const std::string_view w : scan->vocab) {
    std::memcpy(words, w.data(), w.size());
    words += w.size();
    *words++ = '\n';
  }
  std::copy(scan->counts.begin(), scan->counts.end(), counts);
  std::copy(scan->ids.begin(), scan->ids.end(), ids);
  std::copy(scan->lines.begin(), scan->lines.end(), lines);
  delete scan;
  return 0;
}

void torchnce_corpus_free(void* handle) { delete static_cast<Scan*>(handle); }

// Prints rows [rows, cols] into out (capacity bytes; 14 * cols + 1 per row always suffice).
// Returns the bytes written, or -1 when out is too small.
int64_t torchnce_format_rows(const float* values, int64_t rows, int64_t cols, char* out,
                             int64_t capacity) {
  char* p = out;
  char* const end = out + capacity;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (c > 0) {
        if (p == end) return -1;
        *p++ = ' ';
      }
      const double v = values[r * cols + c];
      const auto done = std::to_chars(p, end, v != v ? std::abs(v) : v,  // "nan", never "-nan"
                                      std::chars_format::general, 6);
      if (done.ec != std::errc()) return -1;
      p = done.ptr;
    }
    if (p == end) return -1;
    *p++ = '\n';
  }
  return p - out;
}

}  // extern "C"
