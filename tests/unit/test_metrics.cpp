#include <cmath>

#include "common.hpp"
#include "qforge/metrics/output_error.hpp"
#include "qforge/metrics/weight_error.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_metrics)

BOOST_AUTO_TEST_CASE(weight_error_by_hand) {
    const std::vector<float> w{1, -2, 3, 4}, w_hat{1, -2.5f, 3, 3};
    // errors 0, 0.5, 0, 1: sum of squares 1.25; signal 1 + 4 + 9 + 16 = 30
    const auto e = weight_error(w, w_hat);
    BOOST_TEST(e.mse == 1.25 / 4);
    BOOST_TEST(e.max_abs == 1.0);
    BOOST_TEST(e.sqnr_db == 10 * std::log10(30 / 1.25), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(e.relative_fro == std::sqrt(1.25 / 30), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(std::isinf(weight_error(w, w).sqnr_db));
    BOOST_CHECK_THROW(weight_error(w, std::vector<float>{1, 2}), InvalidArgument);
    BOOST_CHECK_THROW(weight_error(std::vector<float>{}, std::vector<float>{}), InvalidData);
}

BOOST_AUTO_TEST_CASE(output_error_by_hand) {
    // W = [[1, 0], [0, 1]], W_hat = [[1, 0], [0, 0.5]], X = [[2, 2]] -> Y = [2, 2], Y_hat = [2, 1]
    const std::vector<float> w{1, 0, 0, 1}, w_hat{1, 0, 0, 0.5f}, x{2, 2};
    const double e = output_error(MatrixView<const float>(w.data(), 2, 2), MatrixView<const float>(w_hat.data(), 2, 2),
                                  MatrixView<const float>(x.data(), 1, 2));
    BOOST_TEST(e == std::sqrt(1.0 / 8.0), boost::test_tools::tolerance(1e-12));
    const std::vector<float> x3{2, 2, 2};
    BOOST_CHECK_THROW(output_error(MatrixView<const float>(w.data(), 2, 2), MatrixView<const float>(w_hat.data(), 2, 2),
                                   MatrixView<const float>(x3.data(), 1, 3)),
                      InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
