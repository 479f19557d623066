// A stand-in for libFuzzer where only gcc is installed (fuzz/mutate.sh builds it with
// fuzz/targets.cpp under AddressSanitizer + UBSan): every corpus input, then `rounds` random
// mutations of them (bytes flipped, set or cut, a run duplicated), each fed to the target.
// Not coverage-guided: it finds what damage to real streams finds, not what only a search would.
//   mutate DIR ROUNDS [SEED]
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size);

namespace {

std::vector<std::vector<uint8_t>> load(const std::string& dir) {
  std::vector<std::vector<uint8_t>> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    FILE* f = std::fopen((dir + "/" + e->d_name).c_str(), "rb");
    if (!f) continue;
    std::vector<uint8_t> b;
    for (int c; (c = std::fgetc(f)) != EOF;) b.push_back(static_cast<uint8_t>(c));
    std::fclose(f);
    out.push_back(std::move(b));
  }
  closedir(d);
  return out;
}

void mutate(std::vector<uint8_t>& b, std::mt19937_64& g) {
  const int edits = 1 + static_cast<int>(g() % 4);
  for (int i = 0; i < edits && !b.empty(); ++i) {
    const std::size_t at = g() % b.size();
    switch (g() % 5) {
      case 0: b[at] ^= static_cast<uint8_t>(1u << (g() % 8)); break;
      case 1: b[at] = static_cast<uint8_t>(g()); break;
      case 2: b.resize(at); break;
      case 3: {
        const std::size_t len = std::min<std::size_t>(b.size() - at, 1 + g() % 16);
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at),
                 b.begin() + static_cast<std::ptrdiff_t>(at + len));
        break;
      }
      default: b[at] = static_cast<uint8_t>(g() % 2 ? 0 : 0xff);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DIR ROUNDS [SEED]\n", argv[0]);
    return 2;
  }
  const auto corpus = load(argv[1]);
  if (corpus.empty()) {
    std::fprintf(stderr, "no inputs in %s\n", argv[1]);
    return 2;
  }
  const long rounds = std::atol(argv[2]);
  std::mt19937_64 g(argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1);
  for (const auto& b : corpus) LLVMFuzzerTestOneInput(b.data(), b.size());
  for (long r = 0; r < rounds; ++r) {
    std::vector<uint8_t> b = corpus[g() % corpus.size()];
    mutate(b, g);
    LLVMFuzzerTestOneInput(b.data(), b.size());
  }
  std::printf("%s: %zu inputs and %ld mutations, no finding\n", argv[1], corpus.size(), rounds);
  return 0;
}
