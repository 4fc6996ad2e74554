// libFuzzer: arbitrary floats (NaN, Inf, subnormals, huge values) and grid parameters through
// RTN, every packed format and the kernels. Invariants: bad input is refused with a qforge
// exception; otherwise pack/unpack is lossless, packed dequantization equals the definition
// bit for bit, and the vector GEMV equals the scalar oracle bit for bit.
#include <qforge/qforge.hpp>
#include <qforge/runtime/dispatch.hpp>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace {
template <class F>
void check(const qforge::QuantizedMatrix& q, const std::vector<float>& x) {
    if (!F::unsupported(q.spec, q.rows, q.cols).empty()) return;
    const auto p = F::pack(q);
    const auto back = F::unpack(p);
    if (back.codes != q.codes || back.scales != q.scales || back.zeros != q.zeros || back.mins != q.mins) std::abort();
    const auto ref = q.dequantize();
    const auto dq = qforge::dequantize<F>(p, qforge::best_isa(), 1);
    if (std::memcmp(ref.data(), dq.data(), ref.size() * 4) != 0) std::abort();
    std::vector<float> y1(std::size_t(q.rows)), y2(std::size_t(q.rows));
    qforge::gemv<F>(p, x, y1, qforge::Isa::scalar, 1);
    qforge::gemv<F>(p, x, y2, qforge::best_isa(), 1);
    if (std::memcmp(y1.data(), y2.data(), y1.size() * 4) != 0) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 4) return 0;
    const int bits = data[0] % 9;
    const int group = data[1] % 4 == 0 ? 0 : 8 * (data[1] % 24);
    const auto zero = qforge::ZeroPoint(data[2] % 3);
    const int rows = 1 + data[3] % 5;
    const std::size_t floats = (size - 4) / 4;
    const int cols = int(floats / std::size_t(rows));
    std::vector<float> w(std::size_t(rows) * std::size_t(cols));
    if (!w.empty()) std::memcpy(w.data(), data + 4, w.size() * 4);
    std::vector<float> x(static_cast<std::size_t>(cols));
    for (int i = 0; i < cols; ++i) x[std::size_t(i)] = float((i * 7) % 13) - 6.0f;
    try {
        const qforge::QuantSpec spec{bits, group, zero, qforge::ScaleType::f16};
        const auto q = qforge::RtnQuantizer(spec, (data[1] & 0x80) != 0).quantize(
            qforge::MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)));
        switch (bits) {
            case 2: check<qforge::Dense<2>>(q, x); break;
            case 3: check<qforge::Dense<3>>(q, x); break;
            case 4:
                check<qforge::Dense<4>>(q, x);
                check<qforge::Q4_0>(q, x);
                check<qforge::Q4_1>(q, x);
                break;
            case 8:
                check<qforge::Dense<8>>(q, x);
                check<qforge::Q8_0>(q, x);
                break;
            default: std::abort();  // the quantizer must have refused other widths
        }
    } catch (const qforge::Error&) {
    }
    return 0;
}
