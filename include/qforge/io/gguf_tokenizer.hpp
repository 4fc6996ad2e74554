#pragma once
/// @file
/// A tokenizer as GGUF's `tokenizer.ggml.*` metadata, for the GGUF writer
/// (container/llama/gguf_export.hpp): copied from a GGUF file, or built from a llama2.c
/// `tokenizer.bin` (SentencePiece: model "llama"). Keys and token types as llama.cpp reads them
/// (ggml's docs/gguf.md, `llama_vocab::load`): token types 1 normal, 2 unknown, 3 control,
/// 6 byte; SentencePiece pieces spell spaces as U+2581.
#include <string>
#include <utility>
#include <vector>

#include "qforge/io/gguf.hpp"
#include "qforge/io/gguf_writer.hpp"
#include "qforge/io/llama2c_tokenizer.hpp"

namespace qforge::io {

using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

/// Every `tokenizer.*` key of a GGUF file, as stored.
inline GgufMetadata tokenizer_metadata(const GgufFile& f) {
    GgufMetadata out;
    for (const auto& [key, value] : f.metadata())
        if (key.rfind("tokenizer.", 0) == 0) out.emplace_back(key, value);
    if (out.empty()) throw FileError(f.path(), "no tokenizer.* metadata to copy");
    return out;
}

/// A llama2.c tokenizer.bin of `vocab_size` pieces as llama.cpp's SentencePiece vocabulary:
/// id 0 unknown, 1 BOS and 2 EOS (control), `<0xNN>` pieces byte tokens; BOS added to every
/// text (llama2.c's run.c does) and a space prefix (its encoder prepends " ").
inline GgufMetadata tokenizer_metadata(const Llama2cTokenizer& t) {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<std::int32_t> types;
    for (int i = 0; i < t.vocab_size(); ++i) {
        std::string piece;
        for (const char ch : t.piece(i)) piece += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
        const std::string& p = t.piece(i);
        const bool byte = p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>';
        tokens.push_back(std::move(piece));
        scores.push_back(t.score(i));
        types.push_back(i == 0 ? 2 : i == Llama2cTokenizer::bos || i == Llama2cTokenizer::eos ? 3 : byte ? 6 : 1);
    }
    using namespace gguf_value;
    return {{"tokenizer.ggml.model", string("llama")},
            {"tokenizer.ggml.tokens", strings(tokens)},
            {"tokenizer.ggml.scores", f32s(scores)},
            {"tokenizer.ggml.token_type", i32s(types)},
            {"tokenizer.ggml.unknown_token_id", u32(0)},
            {"tokenizer.ggml.bos_token_id", u32(std::uint32_t(Llama2cTokenizer::bos))},
            {"tokenizer.ggml.eos_token_id", u32(std::uint32_t(Llama2cTokenizer::eos))},
            {"tokenizer.ggml.add_bos_token", boolean(true)},
            {"tokenizer.ggml.add_eos_token", boolean(false)},
            {"tokenizer.ggml.add_space_prefix", boolean(true)}};
}

}  // namespace qforge::io
