// Must not compile: kernels on a backend without primitives.
#include <qforge/backends/kernels.hpp>

struct Metal {  // a backend someone has named but not written
    static constexpr std::string_view name() noexcept { return "metal"; }
};

template struct qforge::Kernels<Metal, qforge::Dense<4>>;

int main() {}
