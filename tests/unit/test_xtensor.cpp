#include <xtensor/xbuilder.hpp>
#include <xtensor/xview.hpp>

#include "common.hpp"
#include "qforge/core/xtensor.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_xtensor)

BOOST_AUTO_TEST_CASE(expressions_quantize_like_views) {
    const auto w = qtest::random_weights(6 * 80, 9);
    const auto t = xt::adapt(w, std::array<std::size_t, 2>{6, 80});
    using S = Scheme<Rtn, Int<4>, Group<32>, Asym>;
    const auto from_view = quantize<S>(MatrixView<const float>(w.data(), 6, 80)).q;
    const auto from_expr = quantize<S>(t).q;
    BOOST_TEST((from_view.codes == from_expr.codes && from_view.scales == from_expr.scales));

    // a lazy expression (transpose of a transpose, times one) and a strided view
    const auto lazy = quantize<S>(xt::transpose(xt::transpose(t)) * 1.0f).q;
    BOOST_TEST((lazy.codes == from_view.codes));
    const auto every_other_row = quantize<S>(xt::view(t, xt::range(0, 6, 2), xt::all())).q;
    BOOST_TEST(every_other_row.rows == 3);
    BOOST_TEST((std::equal(every_other_row.codes.begin(), every_other_row.codes.begin() + 80, from_view.codes.begin())));

    const auto back = dequantize_xt(from_expr);
    BOOST_TEST(back.shape()[1] == 80u);
    BOOST_TEST(weight_error(t, back).mse == weight_error(w, from_view.dequantize()).mse);
    BOOST_TEST((quantize_with(RtnQuantizer(QuantSpec{3, 16}), t).codes ==
                RtnQuantizer(QuantSpec{3, 16}).quantize(MatrixView<const float>(w.data(), 6, 80)).codes));
}

BOOST_AUTO_TEST_CASE(wrong_rank_is_a_clear_error) {
    const xt::xtensor<float, 1> v = xt::ones<float>({8});
    BOOST_CHECK_THROW((quantize<Scheme<Rtn, Int<4>>>(v)), InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
