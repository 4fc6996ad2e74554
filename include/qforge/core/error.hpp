#pragma once
/// @file
/// Exceptions thrown by qforge. Every failure on bad input is one of these, with a message that
/// names the offending file, tensor or parameter, so callers never see undefined behaviour.
#include <stdexcept>
#include <string>

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

}  // namespace qforge
