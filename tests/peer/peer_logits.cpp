// Helper of the llama.cpp peer test: qforge's logits for given token ids of a GGUF Llama model,
// all positions, float32 row-major, for the Python side to compare with llama.cpp's.
// Usage: peer_logits MODEL.gguf TOKENS.txt OUT.bin stored|reference
//   stored:    the packed weights as the file holds them (Q4_1 blocks, 8-bit activations)
//   reference: the decoder's packed layers dequantized to FP32 ("Q4_1-ref")
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <qforge/sources/llama/gguf_loader.hpp>

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: peer_logits MODEL.gguf TOKENS.txt OUT.bin stored|reference\n");
        return 2;
    }
    try {
        const auto file = qforge::io::GgufFile::open(argv[1]);
        auto w = qforge::llama::from_gguf(file);
        if (std::string(argv[4]) == "reference")
            w = qforge::llama::dequantized_weights(w);
        std::ifstream in(argv[2]);
        std::vector<int> tokens;
        for (int t; in >> t;) tokens.push_back(t);
        qforge::llama::Session s(w, qforge::Backend::cpu(), int(tokens.size()));
        const auto logits = s.forward_batch(tokens, 0);
        std::ofstream out(argv[3], std::ios::binary);
        out.write(reinterpret_cast<const char*>(logits.data), std::streamsize(logits.rows * logits.cols * sizeof(float)));
        return out ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "peer_logits: %s\n", e.what());
        return 1;
    }
}
