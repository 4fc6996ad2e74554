#pragma once
/// @file
/// Exceptions thrown by qforge. Every failure on bad input is one of these, with a message that
/// names the offending file, tensor or parameter, so callers never see undefined behaviour.
///
/// Code that knows where an error happened (a file, a tensor, a row) and calls code that does
/// not adds that context on the way out: `with_context("blk.3.attn_q.weight", [&] { ... })`, or
/// `rethrow_with_context(...)` inside a catch block. The exception keeps its type (a FileError
/// stays a FileError), so callers catching by type see no difference.
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace qforge {

/// Base of every qforge exception.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A parameter is outside what the scheme, format or kernel supports (bits, group size, shape).
class InvalidArgument : public Error {
public:
    using Error::Error;
};

/// Input data is unusable: NaN/Inf weights, empty matrices, mismatched shapes.
class InvalidData : public Error {
public:
    using Error::Error;
};

/// A file could not be read or is malformed (wrong magic, truncated, inconsistent sizes).
class FileError : public Error {
public:
    FileError(const std::string& path, const std::string& problem)
        : Error(path + ": " + problem) {}
};

/// Rethrows the exception being handled (call only inside a catch block) as the same qforge
/// type with the message `head + ": " + tail`. Exceptions that are not qforge errors pass
/// unchanged.
[[noreturn]] inline void rethrow_as(const std::string& head, const std::string& tail) {
    try {
        throw;
    } catch (const FileError&) {
        throw FileError(head, tail);
    } catch (const InvalidArgument&) {
        throw InvalidArgument(head + ": " + tail);
    } catch (const InvalidData&) {
        throw InvalidData(head + ": " + tail);
    } catch (const Error&) {
        throw Error(head + ": " + tail);
    }
}

/// Rethrows the exception being handled (inside a catch block only) with `context + ": "`
/// before its message, keeping its type; a message that already starts with the context is left
/// alone, so nested wrappers do not repeat it.
[[noreturn]] inline void rethrow_with_context(const std::string& context) {
    try {
        throw;
    } catch (const Error& e) {
        const std::string_view m = e.what();
        if (context.empty() || (m.substr(0, context.size()) == context && m.substr(context.size(), 2) == ": ")) throw;
        rethrow_as(context, std::string(m));
    }
}

/// Rethrows the exception being handled (inside a catch block only) so that its message names
/// `file` (a file, directory or model label; may be empty) and `tensor`, adding only what the
/// message lacks: "file: tensor T: <message>".
[[noreturn]] inline void rethrow_for_tensor(const std::string& file, const std::string& tensor) {
    try {
        throw;
    } catch (const Error& e) {
        const std::string m = e.what();
        const bool has_tensor = m.find(tensor) != std::string::npos;
        const bool has_file = file.empty() || m.find(file) != std::string::npos;
        if (has_tensor && has_file) throw;
        if (has_tensor) rethrow_as(file, m);
        if (!file.empty() && m.size() > file.size() + 2 && m.compare(0, file.size(), file) == 0 && m.compare(file.size(), 2, ": ") == 0)
            rethrow_as(file, "tensor " + tensor + ": " + m.substr(file.size() + 2));
        rethrow_as(file.empty() || has_file ? "tensor " + tensor : file + ": tensor " + tensor, m);
    }
}

/// Runs `fn()`; a qforge error it throws comes back with `context` before its message.
template <class Fn>
decltype(auto) with_context(const std::string& context, Fn&& fn) {
    try {
        return std::forward<Fn>(fn)();
    } catch (const Error&) {
        rethrow_with_context(context);
    }
}

/// Runs `fn()`; a qforge error it throws comes back naming `file` and `tensor`
/// (see rethrow_for_tensor).
template <class Fn>
decltype(auto) with_tensor_context(const std::string& file, const std::string& tensor, Fn&& fn) {
    try {
        return std::forward<Fn>(fn)();
    } catch (const Error&) {
        rethrow_for_tensor(file, tensor);
    }
}

}  // namespace qforge
