// Must not compile: kernels for a format without kernel traits.
#include <qforge/backends/kernels.hpp>
#include <qforge/backends/scalar/primitives.hpp>

struct Q5_0 {  // a GGUF type qforge has no row for
    struct Packed {};
};

template struct qforge::Kernels<qforge::Scalar, Q5_0>;

int main() {}
