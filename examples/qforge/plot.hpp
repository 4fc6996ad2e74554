#pragma once
// The CLI's one SVG plot: series of (x, y) points drawn as lines with markers, linear axes or a
// logarithmic y axis, a legend, optional horizontal reference line. `qforge lens` (p(next) per
// layer) and `qforge eval --svg` (perplexity against bits per weight) draw through it; the file
// is written whole or not at all (io::write_file_atomically).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <qforge/core/error.hpp>
#include <qforge/io/output_path.hpp>

namespace cli {

struct PlotSeries {
    std::string label;
    std::vector<std::pair<double, double>> points;  ///< drawn in this order
};

struct Plot {
    std::string title, x_label, y_label;
    bool log_y = false;                  ///< y on a log scale (all y must be > 0)
    bool y_from_zero = false;            ///< linear y axis starting at 0
    std::optional<double> reference_y;   ///< a dashed horizontal line (e.g. the reference's PPL)
    std::string reference_label;
    std::vector<PlotSeries> series;
};

namespace detail {
inline std::string xml_escaped(const std::string& s) {
    std::string out;
    for (const char c : s) {
        if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else if (c == '&') out += "&amp;";
        else if (c == '"') out += "&quot;";
        else out += c;
    }
    return out;
}
}  // namespace detail

/// The plot as SVG text (640 x 400).
inline std::string plot_svg(const Plot& p) {
    const double W = 640, H = 400, left = 70, right = 20, top = 30, bottom = 50;
    double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
    const auto fy = [&](double y) { return p.log_y ? std::log10(y) : y; };
    for (const auto& s : p.series)
        for (const auto& [x, y] : s.points) {
            if (!std::isfinite(x) || !std::isfinite(y) || (p.log_y && y <= 0)) continue;
            x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, fy(y)), y1 = std::max(y1, fy(y));
        }
    if (p.reference_y && (!p.log_y || *p.reference_y > 0)) y0 = std::min(y0, fy(*p.reference_y)), y1 = std::max(y1, fy(*p.reference_y));
    if (!(x0 <= x1)) x0 = 0, x1 = 1;
    if (!(y0 <= y1)) y0 = 0, y1 = 1;
    if (p.y_from_zero && !p.log_y) y0 = std::min(0.0, y0);
    if (x1 - x0 < 1e-9) x0 -= 0.5, x1 += 0.5;
    if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
    const double xpad = 0.04 * (x1 - x0), ypad = 0.06 * (y1 - y0);
    x0 -= xpad, x1 += xpad, y1 += ypad;
    if (!p.y_from_zero || p.log_y) y0 -= ypad;
    const auto X = [&](double x) { return left + (W - left - right) * (x - x0) / (x1 - x0); };
    const auto Y = [&](double v) { return H - bottom - (H - top - bottom) * (v - y0) / (y1 - y0); };
    std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"400\" font-family=\"sans-serif\" font-size=\"12\">\n"
                      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    char buf[512];
    const auto add = [&](const char* fmt, auto... args) {
        std::snprintf(buf, sizeof buf, fmt, args...);
        svg += buf;
    };
    add("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", left, H - bottom, W - right, H - bottom);
    add("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", left, top, left, H - bottom);
    for (int k = 0; k <= 5; ++k) {
        const double v = y0 + (y1 - y0) * k / 5, shown = p.log_y ? std::pow(10.0, v) : v;
        add("<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.4g</text>\n", left - 5, Y(v) + 4, shown);
        add("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#dddddd\"/>\n", left, Y(v), W - right, Y(v));
    }
    for (int k = 0; k <= 6; ++k) {
        const double v = x0 + (x1 - x0) * k / 6;
        add("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.3g</text>\n", X(v), H - bottom + 18, v);
    }
    add("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", (left + W - right) / 2, H - 12, detail::xml_escaped(p.x_label).c_str());
    add("<text x=\"14\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 14 %g)\">%s</text>\n", (top + H - bottom) / 2, (top + H - bottom) / 2,
        detail::xml_escaped(p.y_label + (p.log_y ? " (log scale)" : "")).c_str());
    add("<text x=\"%g\" y=\"18\">%s</text>\n", left, detail::xml_escaped(p.title).c_str());
    if (p.reference_y && (!p.log_y || *p.reference_y > 0)) {
        const double y = Y(fy(*p.reference_y));
        add("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"gray\" stroke-dasharray=\"6 4\"/>\n", left, y, W - right, y);
        add("<text x=\"%g\" y=\"%g\" text-anchor=\"end\" fill=\"gray\">%s</text>\n", W - right - 4, y - 4, detail::xml_escaped(p.reference_label).c_str());
    }
    static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
    for (std::size_t s = 0; s < p.series.size(); ++s) {
        const char* colour = colours[s % 8];
        std::string points;
        for (const auto& [x, y] : p.series[s].points) {
            if (!std::isfinite(x) || !std::isfinite(y) || (p.log_y && y <= 0)) continue;
            std::snprintf(buf, sizeof buf, "%g,%g ", X(x), Y(fy(y)));
            points += buf;
            add("<circle cx=\"%g\" cy=\"%g\" r=\"3\" fill=\"%s\"/>\n", X(x), Y(fy(y)), colour);
        }
        svg += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + std::string(colour) + "\" points=\"" + points + "\"/>\n";
        add("<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", W - right - 170, top + 16 + 16 * double(s), colour, detail::xml_escaped(p.series[s].label).c_str());
    }
    svg += "</svg>\n";
    return svg;
}

/// Writes the plot to `path` atomically. Throws what io::write_file_atomically throws.
inline void write_plot(const std::string& path, const Plot& p) { qforge::io::write_file_atomically(path, plot_svg(p)); }

/// A heat map: rows x columns of values, each cell coloured by log10 of its value (white at the
/// smallest, dark red at the largest; values <= 0 or not finite drawn grey), with its value
/// written in it and the cells in `marked` (row-major, or empty) outlined. `qforge allocate`
/// draws its per-block sensitivity through it.
struct HeatMap {
    std::string title, value_label;
    std::vector<std::string> row_labels, column_labels;
    std::vector<double> values;  ///< rows x columns, row-major
    std::vector<bool> marked;    ///< rows x columns, or empty
};

/// The heat map as SVG text. Throws InvalidArgument when values or marked do not match the labels.
inline std::string heat_map_svg(const HeatMap& m) {
    const std::size_t R = m.row_labels.size(), C = m.column_labels.size();
    if (m.values.size() != R * C || (!m.marked.empty() && m.marked.size() != R * C))
        throw qforge::InvalidArgument("heat map: " + std::to_string(m.values.size()) + " values for " + std::to_string(R) + " x " + std::to_string(C) + " cells");
    const double cw = 96, ch = 18, left = 70, top = 76, bottom = 30;
    const double W = std::max(left + cw * double(C) + 20, 700.0), H = top + ch * double(R) + bottom;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const double v : m.values)
        if (v > 0 && std::isfinite(v)) lo = std::min(lo, std::log10(v)), hi = std::max(hi, std::log10(v));
    if (!(lo < hi)) hi = lo + 1;
    std::string out;
    char buf[512];
    std::snprintf(buf, sizeof buf, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    out += buf;
    out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"18\" font-size=\"14\">%s</text>\n", left, detail::xml_escaped(m.title).c_str());
    out += buf;
    std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"34\" fill=\"#555\">%s</text>\n", left, detail::xml_escaped(m.value_label).c_str());
    out += buf;
    std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"50\" fill=\"#555\">colour: log10 of the value, white %.3g .. dark red %.3g</text>\n", left,
                  std::pow(10.0, lo), std::pow(10.0, hi));
    out += buf;
    for (std::size_t c = 0; c < C; ++c) {
        std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", left + cw * (double(c) + 0.5), top - 6,
                      detail::xml_escaped(m.column_labels[c]).c_str());
        out += buf;
    }
    for (std::size_t r = 0; r < R; ++r) {
        const double y = top + ch * double(r);
        std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left - 6, y + ch * 0.7,
                      detail::xml_escaped(m.row_labels[r]).c_str());
        out += buf;
        for (std::size_t c = 0; c < C; ++c) {
            const double v = m.values[r * C + c];
            std::string fill = "#bbbbbb";
            bool dark = false;
            if (v > 0 && std::isfinite(v)) {
                const double f = (std::log10(v) - lo) / (hi - lo);  // 0 white .. 1 dark red (139, 0, 0)
                const int red = int(255 - f * (255 - 139) + 0.5), other = int(255 * (1 - f) + 0.5);
                std::snprintf(buf, sizeof buf, "#%02x%02x%02x", red, other, other);
                fill = buf;
                dark = f > 0.55;
            }
            const bool mark = !m.marked.empty() && m.marked[r * C + c];
            std::snprintf(buf, sizeof buf, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" stroke=\"%s\" stroke-width=\"%s\"/>\n",
                          left + cw * double(c), y, cw, ch, fill.c_str(), mark ? "black" : "white", mark ? "2.5" : "1");
            out += buf;
            std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">%.3g</text>\n", left + cw * (double(c) + 0.5),
                          y + ch * 0.7, dark ? "white" : "black", v);
            out += buf;
        }
    }
    out += "</svg>\n";
    return out;
}

/// Writes the heat map to `path` atomically.
inline void write_heat_map(const std::string& path, const HeatMap& m) { qforge::io::write_file_atomically(path, heat_map_svg(m)); }

}  // namespace cli
