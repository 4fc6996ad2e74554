#pragma once
/// @file
/// The generic packed format: b-bit codes (b = 2, 3, 4, 8) densely bit-packed, fp16 scales,
/// and uint8 zeros or fp16 minimums per group.
///
/// Byte layout of `Dense<b>::Packed` (all little-endian):
/// - `codes`: rows x row_bytes, row_bytes = ceil(cols * b / 8). Row r is an LSB-first
///   bitstream: code c occupies bits [c*b, c*b + b) of the row, where bit k of the stream is bit
///   (k mod 8) of byte k / 8. A 3-bit row of 64 codes therefore takes exactly 24 bytes. Unused bits
///   at the end of a row are 0. Kernels never read past a row's last byte, so a view may point
///   into a caller's buffer of exactly rows * row_bytes bytes.
/// - `scales`: rows x groups fp16 bit patterns.
/// - `zeros`: rows x groups uint8 (ZeroPoint::integer only).
/// - `mins`: rows x groups fp16 bit patterns (ZeroPoint::float_min only).
/// Groups must start on byte boundaries: group_length * b is a multiple of 8, or there is one
/// group per row. Bits per weight = 8 * (codes + scales + zeros + mins bytes) / (rows * cols).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <algorithm>

#include "qforge/core/half.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/formats/format.hpp"

namespace qforge {

/// Read-only view of packed rows that kernels consume (plain pointers, no ownership).
struct DenseView {
    int bits = 0, rows = 0, cols = 0;
    int group_length = 0, groups_per_row = 0;
    ZeroPoint zero = ZeroPoint::integer;
    std::size_t row_bytes = 0;
    const std::uint8_t* codes = nullptr;
    const std::uint16_t* scales = nullptr;
    const std::uint8_t* zeros = nullptr;
    const std::uint16_t* mins = nullptr;

    [[gnu::always_inline]] const std::uint8_t* group_codes(int r, int g) const noexcept {
        return codes + std::size_t(r) * row_bytes + std::size_t(g) * std::size_t(group_length) * std::size_t(bits) / 8;
    }
    [[gnu::always_inline]] std::size_t gi(int r, int g) const noexcept { return std::size_t(r) * std::size_t(groups_per_row) + std::size_t(g); }
};

namespace detail {
/// "nan", "inf" or "-inf" (or the number) for messages about stored values.
inline std::string value_text(float v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return std::to_string(v);
}
/// "group 2 (columns 64-95)" of a row with `group_length`-wide groups.
inline std::string group_text(int g, int group_length, int cols) {
    const int c0 = g * group_length, c1 = std::min(cols, c0 + group_length) - 1;
    return "group " + std::to_string(g) + " (columns " + std::to_string(c0) + "-" + std::to_string(c1) + ")";
}
/// Writes code `q` at position `i` of an LSB-first bitstream.
inline void put_bits(std::uint8_t* stream, std::size_t i, int bits, unsigned q) noexcept {
    const std::size_t bit = i * std::size_t(bits);
    const unsigned shifted = q << (bit % 8);
    stream[bit / 8] |= std::uint8_t(shifted);
    if ((bit % 8) + std::size_t(bits) > 8) stream[bit / 8 + 1] |= std::uint8_t(shifted >> 8);
}
/// fp16 bits of a scale the quantizer already rounded to fp16; anything else is a caller error.
/// `where()` (e.g. "row 3, group 1 (columns 32-63)") names the group in the message; it is only
/// called on failure.
template <class Where>
inline std::uint16_t exact_half(float v, const std::string& format, const char* what, Where&& where) {
    const std::uint16_t h = float_to_half(v);
    if (!(half_to_float(h) == v || (v != v)))
        throw InvalidData(format + ": " + std::string(where()) + ": " + what + " " + std::to_string(v) +
                          " is not an fp16 value (quantize with ScaleType::f16)");
    return h;
}
inline unsigned get_bits(const std::uint8_t* stream, std::size_t i, int bits) noexcept {
    const std::size_t bit = i * std::size_t(bits);
    unsigned v = stream[bit / 8];
    if ((bit % 8) + std::size_t(bits) > 8) v |= unsigned(stream[bit / 8 + 1]) << 8;
    return (v >> (bit % 8)) & ((1u << bits) - 1u);
}
}  // namespace detail

template <int Bits>
struct Dense {
    static_assert(Bits == 2 || Bits == 3 || Bits == 4 || Bits == 8,
                  "qforge::Dense<B>: only 2, 3, 4 and 8-bit codes are packed");
    static constexpr int bits = Bits;
    static constexpr char name_text[] = {'d', 'e', 'n', 's', 'e', char('0' + Bits), '\0'};
    static constexpr FormatInfo info{name_text, "dense", Storage::dense_rows, Bits};
    static std::string name() { return name_text; }

    struct Packed {
        QuantSpec spec{};
        int rows = 0, cols = 0;
        std::size_t row_bytes = 0;
        std::vector<std::uint8_t> codes;
        std::vector<std::uint16_t> scales, mins;
        std::vector<std::uint8_t> zeros;

        /// Bytes the format stores (padding excluded).
        std::size_t bytes() const noexcept {
            return std::size_t(rows) * row_bytes + 2 * scales.size() + zeros.size() + 2 * mins.size();
        }
        DenseView view() const noexcept {
            return {Bits, rows, cols, spec.group_length(cols), spec.groups_per_row(cols), spec.zero,
                    row_bytes, codes.data(), scales.data(), zeros.empty() ? nullptr : zeros.data(),
                    mins.empty() ? nullptr : mins.data()};
        }
    };

    /// Empty when the matrix can be packed, otherwise why not.
    static std::string unsupported(const QuantSpec& spec, int rows, int cols) {
        if (spec.bits != Bits)
            return name() + " stores " + std::to_string(Bits) + "-bit codes, the spec has " +
                   std::to_string(spec.bits);
        if (rows <= 0 || cols <= 0) return "empty matrix";
        if (spec.scale_type != ScaleType::f16) return name() + " stores fp16 scales; the spec asks for f32";
        const int g = spec.group_length(cols);
        if (spec.groups_per_row(cols) > 1 && (g * Bits) % 8 != 0)
            return name() + " needs groups that start on a byte (group size * bits a multiple of 8); got group size " +
                   std::to_string(g);
        return {};
    }

    static Packed pack(const QuantizedMatrix& q) {
        if (auto why = unsupported(q.spec, q.rows, q.cols); !why.empty()) throw InvalidArgument(why);
        Packed p;
        p.spec = q.spec;
        p.rows = q.rows;
        p.cols = q.cols;
        p.row_bytes = (std::size_t(q.cols) * Bits + 7) / 8;
        p.codes.assign(std::size_t(q.rows) * p.row_bytes, 0);
        for (int r = 0; r < q.rows; ++r) {
            std::uint8_t* row = p.codes.data() + std::size_t(r) * p.row_bytes;
            const std::uint8_t* src = q.codes.data() + std::size_t(r) * std::size_t(q.cols);
            if constexpr (Bits == 8) {
                std::memcpy(row, src, std::size_t(q.cols));
            } else {
                for (int c = 0; c < q.cols; ++c) {
                    if (src[c] >> Bits)
                        throw InvalidData(name() + ": row " + std::to_string(r) + ", column " + std::to_string(c) + ": code " +
                                          std::to_string(src[c]) + " is out of range");
                    detail::put_bits(row, std::size_t(c), Bits, src[c]);
                }
            }
        }
        const int G = q.groups_per_row(), g_len = q.spec.group_length(q.cols);
        const auto where = [&](std::size_t i) {
            return "row " + std::to_string(i / std::size_t(G)) + ", " + detail::group_text(int(i % std::size_t(G)), g_len, q.cols);
        };
        p.scales.resize(q.scales.size());
        for (std::size_t i = 0; i < q.scales.size(); ++i) p.scales[i] = detail::exact_half(q.scales[i], name(), "scale", [&] { return where(i); });
        if (q.spec.zero == ZeroPoint::integer) p.zeros = q.zeros;
        if (q.spec.zero == ZeroPoint::float_min) {
            p.mins.resize(q.mins.size());
            for (std::size_t i = 0; i < q.mins.size(); ++i) p.mins[i] = detail::exact_half(q.mins[i], name(), "minimum", [&] { return where(i); });
        }
        return p;
    }

    /// Why stored values cannot be used: the first group whose fp16 scale or minimum is NaN or
    /// Inf, or whose zero point lies off the grid, as "row 5, group 2 (columns 64-95) has a
    /// non-finite scale (nan)"; empty when every group is sound. One pass over the groups.
    static std::string fault(const Packed& p) {
        const int G = p.spec.groups_per_row(p.cols), g_len = p.spec.group_length(p.cols);
        if (G <= 0) return {};
        const auto where = [&](std::size_t i) {
            return "row " + std::to_string(i / std::size_t(G)) + ", " + detail::group_text(int(i % std::size_t(G)), g_len, p.cols);
        };
        for (std::size_t i = 0; i < p.scales.size(); ++i)
            if (const float v = half_to_float(p.scales[i]); !std::isfinite(v))
                return where(i) + " has a non-finite scale (" + detail::value_text(v) + ")";
        for (std::size_t i = 0; i < p.mins.size(); ++i)
            if (const float v = half_to_float(p.mins[i]); !std::isfinite(v))
                return where(i) + " has a non-finite minimum (" + detail::value_text(v) + ")";
        for (std::size_t i = 0; i < p.zeros.size(); ++i)
            if (int(p.zeros[i]) > p.spec.max_code())
                return where(i) + " has zero point " + std::to_string(p.zeros[i]) + ", above the " + std::to_string(Bits) +
                       "-bit maximum " + std::to_string(p.spec.max_code());
        return {};
    }

    static QuantizedMatrix unpack(const Packed& p) {
        QuantizedMatrix q(p.spec, p.rows, p.cols);
        for (int r = 0; r < p.rows; ++r) {
            const std::uint8_t* row = p.codes.data() + std::size_t(r) * p.row_bytes;
            for (int c = 0; c < p.cols; ++c)
                q.codes[std::size_t(r) * std::size_t(p.cols) + std::size_t(c)] =
                    std::uint8_t(detail::get_bits(row, std::size_t(c), Bits));
        }
        for (std::size_t i = 0; i < p.scales.size(); ++i) q.scales[i] = half_to_float(p.scales[i]);
        if (p.spec.zero == ZeroPoint::integer) q.zeros = p.zeros;
        for (std::size_t i = 0; i < p.mins.size(); ++i) q.mins[i] = half_to_float(p.mins[i]);
        return q;
    }
};

}  // namespace qforge
