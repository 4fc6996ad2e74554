#pragma once
/// @file
/// What every packed format says about itself (`F::info`), the facts the format registry
/// (formats/registry.hpp) generates the rest from: the linear-weight variant, the container's
/// read/write, the GGUF loader's choice and the kernel instantiations.
#include <cstdint>
#include <optional>
#include <string_view>

#include "qforge/core/spec.hpp"
#include "qforge/formats/ggml_type.hpp"

namespace qforge {

/// How a format's bytes are organised.
enum class Storage : std::uint8_t {
    dense_rows,  ///< per row: a bitstream of codes; per group: scales (+ zeros or minimums) in separate arrays
    blocks,      ///< fixed-size blocks, each holding its scale(s) and codes (GGUF style)
};

struct FormatInfo {
    std::string_view name;       ///< "dense4", "q4_0": in messages and reports
    std::string_view stored_as;  ///< the container's `format` field ("dense" for every dense width)
    Storage storage = Storage::dense_rows;
    int bits = 0;                ///< bits per code
    std::optional<GgmlType> gguf{};  ///< the ggml type whose blocks this format's bytes are, if any
    const Codebook* codebook = nullptr;  ///< the codebook grid it stores, or null (affine grids)
    ScaleType scales = ScaleType::f16;   ///< how it stores scales (dq8: double-quantized codes)
};

}  // namespace qforge
