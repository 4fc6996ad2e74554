#pragma once
// Helpers shared by the unit tests: deterministic random matrices and the data-file setting.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace qtest {

/// QFORGE_DATA if set, else the build's default (../shared/data beside the project).
inline std::string data_dir() {
    const char* env = std::getenv("QFORGE_DATA");
    return env && *env ? env : QFORGE_DEFAULT_DATA;
}
inline std::string data_path(const std::string& rel) { return data_dir() + "/" + rel; }
inline bool data_required() {
    const char* env = std::getenv("QFORGE_REQUIRE_DATA");
    return env && std::string(env) == "1";
}

/// Boost.Test precondition: skip (saying why) when a data file is missing, unless
/// QFORGE_REQUIRE_DATA=1, in which case the test runs and fails on the missing file.
struct needs_data {
    std::string rel;
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        const std::string path = data_path(rel);
        if (std::filesystem::exists(path) || data_required()) return true;
        boost::test_tools::assertion_result r(false);
        r.message() << "data file missing: " << path << " (set QFORGE_DATA; QFORGE_REQUIRE_DATA=1 makes this a failure)";
        return r;
    }
};

/// The SmolLM2 GGUF the setup fetches (scripts/fetch-models.sh into QFORGE_CACHE, default
/// ~/.cache/qforge), or the file QFORGE_SMOLLM2 names.
inline std::string smollm2_path() {
    if (const char* p = std::getenv("QFORGE_SMOLLM2"); p && *p) return p;
    const char* cache = std::getenv("QFORGE_CACHE");
    const char* home = std::getenv("HOME");
    return (cache && *cache ? std::string(cache) : std::string(home ? home : ".") + "/.cache/qforge") +
           "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

/// Precondition like needs_data, for the SmolLM2 model.
struct needs_smollm2 {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        if (std::filesystem::exists(smollm2_path()) || data_required()) return true;
        boost::test_tools::assertion_result r(false);
        r.message() << "SmolLM2 missing: " << smollm2_path() << " (run scripts/fetch-models.sh)";
        return r;
    }
};

/// Gaussian weights with a few large outliers, like real LLM rows.
inline std::vector<float> random_weights(std::size_t n, unsigned seed, float outlier_rate = 0.01f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    std::vector<float> w(n);
    for (auto& v : w) v = normal(rng) * (unit(rng) < outlier_rate ? 8.0f : 1.0f) * 0.05f;
    return w;
}

/// The input Hessian H = 2 X^T X / n of `n_tokens` rows of `cols` inputs (X row-major), in double.
inline std::vector<float> hessian_of(const std::vector<float>& x, int n_tokens, int cols) {
    std::vector<float> h(std::size_t(cols) * std::size_t(cols));
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < cols; ++j) {
            double s = 0;
            for (int t = 0; t < n_tokens; ++t) s += double(x[std::size_t(t) * std::size_t(cols) + std::size_t(i)]) * x[std::size_t(t) * std::size_t(cols) + std::size_t(j)];
            h[std::size_t(i) * std::size_t(cols) + std::size_t(j)] = float(2 * s / n_tokens);
        }
    return h;
}

/// An input of the 2026-11-30 bug report: QFORGE_CASES, else cases/2026-11-30 beside the data
/// directory (../shared/cases).
inline std::string case_path(const std::string& name) {
    const char* env = std::getenv("QFORGE_CASES");
    return (env && *env ? std::string(env) : data_dir() + "/../cases/2026-11-30") + "/" + name;
}

/// The message of the exception `fn` throws: E's own, marked when another type was thrown,
/// "(no error)" when none was.
template <class E = std::exception, class Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const std::exception& e) {
        if constexpr (std::is_same_v<E, std::exception>) return e.what();
        else if (dynamic_cast<const E*>(&e) != nullptr) return e.what();
        return std::string("(another exception type) ") + e.what();
    }
    return "(no error)";
}

/// Whether `message` contains every part (the missing one is logged).
inline bool has_all(const std::string& message, std::initializer_list<std::string> parts) {
    for (const auto& p : parts)
        if (message.find(p) == std::string::npos) {
            BOOST_TEST_MESSAGE("message lacks '" << p << "': " << message);
            return false;
        }
    return true;
}

}  // namespace qtest
