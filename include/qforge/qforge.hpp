#pragma once
/// @file
/// Everything header-only in qforge. (Run-time dispatch lives in qforge/runtime/dispatch.hpp and
/// needs the qforge::dispatch target.)
#include "qforge/backends/activation.hpp"
#include "qforge/backends/backend.hpp"
#include "qforge/backends/codecs.hpp"
#include "qforge/backends/kernels.hpp"
#include "qforge/backends/scalar/primitives.hpp"
#include "qforge/core/concepts.hpp"
#include "qforge/core/error.hpp"
#include "qforge/core/half.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/core/scheme.hpp"
#include "qforge/core/spec.hpp"
#include "qforge/core/view.hpp"
#include "qforge/formats/dense.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/io/llama2c.hpp"
#include "qforge/metrics/output_error.hpp"
#include "qforge/metrics/weight_error.hpp"
#include "qforge/quantizers/registry.hpp"
