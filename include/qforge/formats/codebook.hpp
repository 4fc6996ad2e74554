#pragma once
/// @file
/// Blocks of a 4-bit codebook grid (grids/): N weights per block, one fp16 scale, N/2 bytes of
/// nibbles; weight i = d * levels[q_i].
///
/// | block               | bytes     | layout                                                          |
/// |---------------------|-----------|-----------------------------------------------------------------|
/// | block_codebook<N>   | 2 + N/2   | d: fp16; qs[N/2]: low nibble of byte j = code j, high = code j+N/2 |
///
/// With N = 32 this is byte for byte ggml's `block_iq4_nl` (the same layout as `block_q4_0`).
/// Rows must be whole blocks and the grid's group exactly N.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qforge/core/half.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/formats/dense.hpp"
#include "qforge/formats/format.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/grids/registry.hpp"

namespace qforge {

template <int N>
struct block_codebook {
    std::uint16_t d;         // fp16 scale
    std::uint8_t qs[N / 2];  // nibbles
};
static_assert(sizeof(block_codebook<32>) == 18, "block_codebook<32> must match ggml's 18-byte block_iq4_nl");
static_assert(sizeof(block_codebook<64>) == 34, "block_codebook<64> is 2 + 32 bytes");

template <int N>
struct block_fields<block_codebook<N>> {
    static constexpr std::size_t weights = N;
    static constexpr const char* noun = "block";
    static constexpr std::array<BlockField, 1> fields{{{0, "scale"}}};
};

/// Marks a format whose bytes are no ggml type.
inline constexpr std::uint32_t no_ggml_type = 0xFFFFFFFFu;

namespace detail {
/// Why a codebook block format called `name` (blocks of n, storing `grid` with `scales`) cannot
/// hold a rows x cols matrix of `spec` when its spec is not `want` ("" when it can).
inline std::string codebook_unsupported(const std::string& name, int n, const QuantSpec& spec, const QuantSpec& want, int rows, int cols,
                                        const char* scales) {
    if (rows <= 0 || cols <= 0) return "empty matrix";
    if (cols % n != 0) return name + " needs rows of whole " + std::to_string(n) + "-weight blocks; got " + std::to_string(cols) + " columns";
    if (!(spec == want))
        return name + " stores the " + std::string(want.codebook->name) + " grid with group size " + std::to_string(n) + " and " + scales +
               " scales; the spec differs";
    return {};
}
}  // namespace detail

/// The packed format of codebook grid `Grid` (a tag of grids/) in blocks of N weights, called
/// `Name`; `Gguf`: the ggml type with these bytes, if any.
template <class Grid, int Block, const char* Name, std::uint32_t Gguf = no_ggml_type>
struct CodebookBlocks {
    static constexpr int N = Block;
    using codebook_grid = Grid;
    static_assert(Grid::bits == 4 && N % 2 == 0, "qforge::CodebookBlocks: 4-bit codebooks in blocks of an even size");
    using block_type = block_codebook<N>;
    static constexpr int bits = 4;
    static constexpr const Codebook* codebook = Grid::codebook;
    static constexpr FormatInfo info{Name, Name, Storage::blocks, 4,
                                     Gguf == no_ggml_type ? std::optional<GgmlType>() : std::optional<GgmlType>(GgmlType(Gguf)), Grid::codebook};
    static std::string name() { return Name; }
    static constexpr QuantSpec grid_spec{4, N, ZeroPoint::symmetric, ScaleType::f16, Grid::codebook};

    struct Packed {
        QuantSpec spec = grid_spec;
        int rows = 0, cols = 0;
        std::vector<block_type> blocks;
        std::size_t bytes() const noexcept { return blocks.size() * sizeof(block_type); }
        BlockView<block_type> view() const noexcept { return {rows, cols, blocks.data()}; }
    };

    static std::string unsupported(const QuantSpec& spec, int rows, int cols) {
        return detail::codebook_unsupported(name(), N, spec, grid_spec, rows, cols, "fp16");
    }

    static std::string fault(const Packed& p) {
        return nonfinite_block<block_type>(reinterpret_cast<const std::uint8_t*>(p.blocks.data()), p.blocks.size(), std::size_t(p.cols));
    }

    static Packed pack(const QuantizedMatrix& q) {
        if (auto why = unsupported(q.spec, q.rows, q.cols); !why.empty()) throw InvalidArgument(why);
        Packed p;
        p.rows = q.rows;
        p.cols = q.cols;
        const int per_row = q.cols / N;
        p.blocks.resize(std::size_t(q.rows) * std::size_t(per_row));
        for (int r = 0; r < q.rows; ++r)
            for (int b = 0; b < per_row; ++b) {
                block_type& blk = p.blocks[std::size_t(r) * std::size_t(per_row) + std::size_t(b)];
                const std::uint8_t* codes = q.codes.data() + std::size_t(r) * std::size_t(q.cols) + std::size_t(b) * N;
                const auto where = [&] { return "row " + std::to_string(r) + ", " + detail::group_text(b, N, q.cols); };
                blk.d = detail::exact_half(q.scales[q.group_index(r, b)], name(), "scale", where);
                if (!detail::pack_nibbles(codes, N, blk.qs)) throw InvalidData(name() + ": " + where() + ": a code is out of range");
            }
        return p;
    }

    static QuantizedMatrix unpack(const Packed& p) {
        QuantizedMatrix q(p.spec, p.rows, p.cols);
        const int per_row = p.cols / N;
        for (int r = 0; r < p.rows; ++r)
            for (int b = 0; b < per_row; ++b) {
                const block_type& blk = p.blocks[std::size_t(r) * std::size_t(per_row) + std::size_t(b)];
                std::uint8_t* codes = q.codes.data() + std::size_t(r) * std::size_t(p.cols) + std::size_t(b) * N;
                q.scales[q.group_index(r, b)] = half_to_float(blk.d);
                detail::unpack_nibbles(blk.qs, N, codes);
            }
        return q;
    }
};

// ---- the codebook formats (one row each; the list of all formats is formats/registry.hpp) ----
namespace detail {
inline constexpr char iq4_nl_name[] = "iq4_nl";
}
/// ggml's IQ4_NL: blocks of 32, byte for byte `block_iq4_nl`.
struct IQ4_NL : CodebookBlocks<Iq4Nl, 32, detail::iq4_nl_name, std::uint32_t(GgmlType::IQ4_NL)> {};
inline constexpr char nf4_name[] = "nf4";
/// QLoRA's NF4: blocks of 64 with an fp16 absmax scale (qforge's layout; no GGUF type).
struct NF4 : CodebookBlocks<Nf4, 64, nf4_name> {};

}  // namespace qforge
