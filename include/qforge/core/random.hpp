#pragma once
/// @file
/// The one random-number generator of qforge's own seeded choices (k-means++ seeding, the
/// Hadamard transform's signs): SplitMix64 (Steele, Lea & Flood, OOPSLA 2014), with the mapping to
/// [0, 1) written out, so a seed gives the same numbers on every platform (the standard
/// distributions are implementation-defined).
#include <cstdint>

namespace qforge {

struct SplitMix64 {
    std::uint64_t state;
    std::uint64_t next() noexcept {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    /// Uniform in [0, 1) with 53 random bits.
    double uniform() noexcept { return double(next() >> 11) * 0x1.0p-53; }
};

}  // namespace qforge
