#pragma once
/// @file
/// Best-first merging of adjacent symbols, the core of score-based BPE (llama2.c, SentencePiece):
/// repeatedly merge the adjacent pair whose merged token scores highest, the leftmost on ties,
/// until no pair merges. A heap of candidate pairs over a linked list makes it O(n log n) in the
/// text length, where rescanning after every merge is O(n^2) (minutes on a WikiText slice).
#include <queue>
#include <vector>

namespace qforge::io::detail {

/// `merge(a, b, out, score)` says whether symbols a and b merge, giving the merged symbol and
/// its score.
template <class Sym, class Merge>
void merge_best_first(std::vector<Sym>& symbols, Merge merge) {
    const int n = int(symbols.size());
    if (n < 2) return;
    const auto count = static_cast<std::size_t>(n);
    std::vector<int> prev(count), next(count), version(count, 0);
    std::vector<char> alive(std::size_t(n), 1);
    for (int i = 0; i < n; ++i) {
        prev[std::size_t(i)] = i - 1;
        next[std::size_t(i)] = i + 1 < n ? i + 1 : -1;
    }
    struct Pair {
        float score;
        int left, right, left_version, right_version;
        bool operator<(const Pair& o) const { return score < o.score || (score == o.score && left > o.left); }
    };
    std::priority_queue<Pair> heap;
    Sym merged{};
    const auto offer = [&](int l, int r) {
        if (l < 0 || r < 0) return;
        float score = 0.0f;
        if (merge(symbols[std::size_t(l)], symbols[std::size_t(r)], merged, score))
            heap.push({score, l, r, version[std::size_t(l)], version[std::size_t(r)]});
    };
    for (int i = 0; i + 1 < n; ++i) offer(i, i + 1);
    while (!heap.empty()) {
        const Pair p = heap.top();
        heap.pop();
        const std::size_t l = std::size_t(p.left), r = std::size_t(p.right);
        if (!alive[l] || !alive[r] || next[l] != p.right || version[l] != p.left_version || version[r] != p.right_version) continue;
        float score = 0.0f;
        merge(symbols[l], symbols[r], merged, score);
        symbols[l] = merged;
        ++version[l];
        alive[r] = 0;
        next[l] = next[r];
        if (next[r] >= 0) prev[std::size_t(next[r])] = p.left;
        offer(prev[l], p.left);
        offer(p.left, next[l]);
    }
    std::vector<Sym> out;
    for (int i = 0; i >= 0; i = next[std::size_t(i)]) out.push_back(std::move(symbols[std::size_t(i)]));
    symbols = std::move(out);
}

}  // namespace qforge::io::detail
