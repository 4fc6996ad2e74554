#pragma once
// Command-line parsing shared by the subcommands: one spelling for each common option.
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli {

struct Args {
    std::map<std::string, std::vector<std::string>> values;  // --name value (repeatable)
    std::vector<std::string> flags;                           // --name

    bool has(const std::string& name) const {
        for (const auto& f : flags)
            if (f == name) return true;
        return values.count(name) != 0;
    }
    std::string get(const std::string& name, const std::string& fallback) const {
        const auto it = values.find(name);
        return it == values.end() ? fallback : it->second.back();
    }
    std::vector<std::string> all(const std::string& name) const {
        const auto it = values.find(name);
        return it == values.end() ? std::vector<std::string>{} : it->second;
    }
    int get_int(const std::string& name, int fallback) const {
        const std::string v = get(name, "");
        if (v.empty()) return fallback;
        char* end = nullptr;
        const long n = std::strtol(v.c_str(), &end, 10);
        if (*end != '\0' || n < 0 || n > 1 << 30) throw std::invalid_argument("--" + name + " needs a non-negative integer, got '" + v + "'");
        return int(n);
    }
};

/// `valued` lists the options that take a value; anything else starting with -- is a flag.
inline Args parse(int argc, char** argv, int first, const std::vector<std::string>& valued,
                  const std::vector<std::string>& known_flags) {
    Args a;
    for (int i = first; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + arg + "'");
        arg = arg.substr(2);
        std::string value;
        bool inline_value = false;
        if (const auto eq = arg.find('='); eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            inline_value = true;
        }
        bool is_valued = false;
        for (const auto& v : valued) is_valued |= v == arg;
        if (is_valued) {
            if (!inline_value) {
                if (i + 1 >= argc) throw std::invalid_argument("--" + arg + " needs a value");
                value = argv[++i];
            }
            a.values[arg].push_back(value);
            continue;
        }
        bool is_flag = false;
        for (const auto& f : known_flags) is_flag |= f == arg;
        if (!is_flag || inline_value) throw std::invalid_argument("unknown option '--" + arg + "' (see --help)");
        a.flags.push_back(arg);
    }
    return a;
}

/// QFORGE_DATA, or the build's default (../shared/data beside the project).
inline std::string data_dir() {
    const char* env = std::getenv("QFORGE_DATA");
    return env && *env ? env : QFORGE_DEFAULT_DATA;
}

/// Minimal JSON string escaping for names and messages.
inline std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) {
            out += ' ';
            continue;
        }
        out += c;
    }
    return out + "\"";
}

}  // namespace cli
