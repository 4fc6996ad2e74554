// The bit-allocation solvers against brute force on random small instances: the exact solver's
// loss is the optimum, within the budget; the Lagrangian choice is within the budget, its loss
// at or above the optimum and its lower bound at or below it. Bad input is refused by name.
#include <random>

#include "common.hpp"
#include "qforge/mixed/allocation.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_allocation)

namespace {
struct Brute {
    double loss = std::numeric_limits<double>::infinity();
    std::uint64_t bytes = 0;
};
/// Every choice enumerated; the smallest loss within the budget, summed in unit order.
Brute brute_force(const std::vector<AllocationUnit>& units, std::uint64_t budget) {
    Brute best;
    std::vector<std::size_t> pick(units.size(), 0);
    for (;;) {
        double loss = 0.0;
        std::uint64_t bytes = 0;
        for (std::size_t i = 0; i < units.size(); ++i) loss += units[i].candidates[pick[i]].loss, bytes += units[i].candidates[pick[i]].bytes;
        if (bytes <= budget && (loss < best.loss || (loss == best.loss && bytes < best.bytes))) best = {loss, bytes};
        std::size_t i = 0;
        while (i < units.size() && ++pick[i] == units[i].candidates.size()) pick[i++] = 0;
        if (i == units.size()) return best;
    }
}
}  // namespace

BOOST_AUTO_TEST_CASE(exact_equals_brute_force_and_lagrangian_brackets_it) {
    std::mt19937 rng(17);
    int lagrangian_optimal = 0;
    const int instances = 2000;
    for (int t = 0; t < instances; ++t) {
        const int n = 1 + int(rng() % 6);
        std::vector<AllocationUnit> units(static_cast<std::size_t>(n));
        std::uint64_t least = 0, most = 0;
        for (int i = 0; i < n; ++i) {
            auto& u = units[std::size_t(i)];
            u.name = "u" + std::to_string(i);
            const int k = 1 + int(rng() % 4);
            std::uint64_t lo = ~std::uint64_t(0), hi = 0;
            for (int j = 0; j < k; ++j) {
                // fewer bytes mostly cost more loss, as quantizers do, but not always
                const std::uint64_t b = 1 + rng() % 100;
                const double l = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * (t % 3 == 0 ? 1.0 : 100.0 / double(b));
                u.candidates.push_back({b, l});
                lo = std::min(lo, b), hi = std::max(hi, b);
            }
            least += lo, most += hi;
        }
        const std::uint64_t budget = least + rng() % (most - least + 1);
        const Brute truth = brute_force(units, budget);
        const Allocation e = allocate_exact(units, budget);
        BOOST_TEST_REQUIRE(e.loss == truth.loss, "instance " << t);
        BOOST_TEST_REQUIRE(e.bytes <= budget);
        BOOST_TEST_REQUIRE(e.gap() == 0.0);
        const Allocation g = allocate_lagrangian(units, budget);
        BOOST_TEST_REQUIRE(g.bytes <= budget, "instance " << t);
        BOOST_TEST_REQUIRE(g.loss >= truth.loss - 1e-12, "instance " << t);
        BOOST_TEST_REQUIRE(g.lower_bound <= truth.loss + 1e-9 * (1.0 + truth.loss), "instance " << t);
        BOOST_TEST_REQUIRE(g.gap() >= 0.0);
        lagrangian_optimal += g.loss == truth.loss;
    }
    BOOST_TEST_MESSAGE("Lagrangian choice optimal on " << lagrangian_optimal << " of " << instances << " instances");
    BOOST_TEST(lagrangian_optimal > instances / 2);
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused) {
    const std::vector<AllocationUnit> ok{{"a", {{10, 1.0}, {20, 0.5}}}, {"b", {{5, 2.0}}}};
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { allocate_exact(ok, 14); }), {"below the smallest choice", "15 bytes"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { allocate_lagrangian(ok, 14); }), {"below the smallest choice"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { allocate_exact(std::vector<AllocationUnit>{}, 10); }), {"no units"}));
    const std::vector<AllocationUnit> empty{{"blk.0.attn_q", {}}};
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { allocate_exact(empty, 10); }), {"blk.0.attn_q", "no candidates"}));
    const std::vector<AllocationUnit> nan{{"x", {{1, std::nan("")}}}};
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { allocate_lagrangian(nan, 10); }), {"'x'", "not finite"}));
    std::vector<AllocationUnit> wide;
    for (int i = 0; i < 20; ++i) wide.push_back({"u" + std::to_string(i), {{1, 3.0}, {2, 2.0}, {4, 1.0}, {8, 0.1}}});
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { allocate_exact(wide, 100, 50); }), {"frontier passed 50"}));
    const Allocation a = allocate_exact(ok, 25);
    BOOST_TEST(a.choice == std::vector<int>({1, 0}));
    BOOST_TEST(a.bytes == 25u);
    BOOST_TEST(a.loss == 2.5);
}

BOOST_AUTO_TEST_SUITE_END()
