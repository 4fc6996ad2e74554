// The unit tests' one main (Boost.Test, shared library): each test file is a suite named after
// it (test_gptq, ...), so the files can be linked into one program or several.
#define BOOST_TEST_MODULE qforge_unit
#include <boost/test/unit_test.hpp>
