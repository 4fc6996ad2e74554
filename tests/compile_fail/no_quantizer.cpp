// Must not compile: a method tag with no quantizer specialisation. ctest checks that the build
// fails and prints the primary template's sentence.
#include <qforge/quantizers/registry.hpp>

struct Spqr {  // a method someone has named but not written
    static constexpr qforge::MethodInfo info{"spqr"};
};

int main() {
    float w[4] = {};
    (void)qforge::quantize<qforge::Scheme<Spqr, qforge::Int<4>>>(qforge::MatrixView<const float>(w, 1, 4));
}
