#pragma once
/// @file
/// A memo of values computed once per key, shared between threads: the sensitivity table's
/// candidates quantize the same block's inputs side by side (quantizers/gptq_factor.hpp's
/// factors of H, quantizers/quantizer.hpp's `,had` transforms), and what one of them derives
/// from those inputs alone, the others reuse.
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <vector>

namespace qforge::detail {

/// get(probe, make): make() for the first caller of a key (found by `key == probe`, whole; the
/// Key is built from the probe only when it is new, so a probe of references costs no copy on a
/// hit), the same value for every later one; a caller asking for a key that another thread is computing waits
/// for that value instead of computing it again, while different keys compute side by side. An
/// exception from make() reaches every caller of that key. Entries live as long as the cache.
template <class Key, class Value>
class OnceCache {
public:
    template <class Probe>
    Value get(const Probe& probe, const std::function<Value()>& make) {
        std::shared_future<Value> value;
        std::promise<Value> mine;
        bool first = false;
        {
            std::lock_guard lock(mutex_);
            for (const auto& e : entries_)
                if (e->key == probe) {
                    value = e->value;
                    break;
                }
            if (!value.valid()) {
                value = mine.get_future().share();
                entries_.push_back(std::make_unique<Entry>(Entry{Key(probe), value}));
                first = true;
            }
        }
        if (first) {  // outside the lock: other keys go on meanwhile
            try {
                mine.set_value(make());
            } catch (...) {
                mine.set_exception(std::current_exception());
            }
        }
        return value.get();
    }
    std::size_t size() const {
        std::lock_guard lock(mutex_);
        return entries_.size();
    }

private:
    struct Entry {
        Key key;
        std::shared_future<Value> value;
    };
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace qforge::detail
