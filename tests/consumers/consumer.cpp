// A program an embedding engine might write: a compile-time scheme, a packed format, and a GEMV
// through run-time dispatch, checked against the scalar oracle.
#include <qforge/qforge.hpp>
#include <qforge/runtime/dispatch.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

int main() {
    using Scheme = qforge::Scheme<qforge::Rtn, qforge::Int<4>, qforge::Group<32>, qforge::Sym>;
    const int rows = 48, cols = 96;
    std::vector<float> w(rows * cols), x(cols);
    for (int i = 0; i < rows * cols; ++i) w[i] = float((i * 37) % 101 - 50) / 50.0f;
    for (int i = 0; i < cols; ++i) x[i] = float(i % 7) - 3.0f;

    const auto layer = qforge::quantize<Scheme>(qforge::MatrixView<const float>(w.data(), rows, cols));
    const auto packed = qforge::Q4_0::pack(layer.q);
    std::vector<float> y(rows), y_ref(rows);
    qforge::gemv<qforge::Q4_0>(packed, x, y);
    qforge::gemv<qforge::Q4_0>(packed, x, y_ref, qforge::Isa::scalar);
    const bool ok = std::memcmp(y.data(), y_ref.data(), sizeof(float) * rows) == 0;
    std::printf("%s: %s on %s, %.3f bits/weight\n", ok ? "ok" : "MISMATCH", Scheme::text().c_str(),
                std::string(qforge::isa_name(qforge::best_isa())).c_str(), qforge::bits_per_weight<qforge::Q4_0>(packed));
    return ok ? 0 : 1;
}
