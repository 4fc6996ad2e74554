#pragma once
/// @file
/// The output of every quantizer: one unsigned code per weight plus per-group scales and zeros,
/// not yet packed. It is the common currency between quantizers and formats, and its
/// `dequantize` is the definition of what a quantized weight means.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qforge/core/spec.hpp"

namespace qforge {

struct QuantizedMatrix {
    QuantSpec spec{};
    int rows = 0;
    int cols = 0;
    std::vector<std::uint8_t> codes;  ///< rows x cols, row-major, 0 .. 2^bits-1
    std::vector<float> scales;        ///< rows x groups_per_row
    std::vector<std::uint8_t> zeros;  ///< rows x groups (ZeroPoint::integer only)
    std::vector<float> mins;          ///< rows x groups (ZeroPoint::float_min only)
    /// Two-level grids (spec.super): rows x super-blocks x 2, each super-block's d then dmin
    /// (fp16 values); every group's scale is d * sc and minimum -(dmin * m) for integer codes
    /// sc and m in the grid's ranges.
    std::vector<float> super;

    QuantizedMatrix() = default;
    QuantizedMatrix(const QuantSpec& s, int r, int c)
        : spec(s), rows(r), cols(c), codes(std::size_t(r) * std::size_t(c)),
          scales(std::size_t(r) * std::size_t(s.groups_per_row(c))) {
        if (s.zero == ZeroPoint::integer) zeros.resize(scales.size());
        if (s.zero == ZeroPoint::float_min) mins.resize(scales.size());
        if (s.super) super.resize(std::size_t(r) * std::size_t(supers_per_row()) * 2);
    }
    int supers_per_row() const noexcept { return spec.super ? (cols + spec.super->weights - 1) / spec.super->weights : 0; }

    int groups_per_row() const noexcept { return spec.groups_per_row(cols); }
    int group_of(int col) const noexcept { return col / spec.group_length(cols); }
    std::size_t group_index(int row, int group) const noexcept {
        return std::size_t(row) * std::size_t(groups_per_row()) + std::size_t(group);
    }

    /// The reference meaning of a stored code (see spec.hpp for the conventions).
    float dequantize(int row, int col) const noexcept {
        const std::size_t gi = group_index(row, group_of(col));
        const int q = codes[std::size_t(row) * std::size_t(cols) + std::size_t(col)];
        if (spec.codebook) return scales[gi] * spec.codebook->levels[std::size_t(q)];
        switch (spec.zero) {
            case ZeroPoint::symmetric: return scales[gi] * float(q - spec.symmetric_zero());
            case ZeroPoint::integer: return scales[gi] * float(q - int(zeros[gi]));
            case ZeroPoint::float_min: return std::fma(scales[gi], float(q), mins[gi]);
        }
        return 0.0f;
    }

    /// Rows [r0, r1) as a matrix of their own (codes and grid parameters copied).
    QuantizedMatrix row_range(int r0, int r1) const {
        QuantizedMatrix out(spec, r1 - r0, cols);
        const std::size_t C = std::size_t(cols), G = std::size_t(groups_per_row());
        std::copy(codes.begin() + std::ptrdiff_t(std::size_t(r0) * C), codes.begin() + std::ptrdiff_t(std::size_t(r1) * C), out.codes.begin());
        std::copy(scales.begin() + std::ptrdiff_t(std::size_t(r0) * G), scales.begin() + std::ptrdiff_t(std::size_t(r1) * G), out.scales.begin());
        if (!zeros.empty())
            std::copy(zeros.begin() + std::ptrdiff_t(std::size_t(r0) * G), zeros.begin() + std::ptrdiff_t(std::size_t(r1) * G), out.zeros.begin());
        if (!mins.empty())
            std::copy(mins.begin() + std::ptrdiff_t(std::size_t(r0) * G), mins.begin() + std::ptrdiff_t(std::size_t(r1) * G), out.mins.begin());
        if (!super.empty()) {
            const std::size_t S = std::size_t(supers_per_row()) * 2;
            std::copy(super.begin() + std::ptrdiff_t(std::size_t(r0) * S), super.begin() + std::ptrdiff_t(std::size_t(r1) * S), out.super.begin());
        }
        return out;
    }

    /// The whole matrix dequantized, row-major.
    std::vector<float> dequantize() const {
        std::vector<float> out(codes.size());
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
                out[std::size_t(r) * std::size_t(cols) + std::size_t(c)] = dequantize(r, c);
        return out;
    }
};

}  // namespace qforge
