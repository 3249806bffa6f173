// patchbay tests: a small strict reader and writer for NumPy .npy files (format 1.0/2.0/3.0,
// little-endian <f4, <f8, <i8, C order). Malformed or truncated files raise patchbay::error.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/tensor.hpp"

namespace patchbay::npy {

enum class dtype { f4, f8, i8 };

/// A loaded array: values widened to double (i8 kept exactly in `ints` as well).
struct array {
    dtype type = dtype::f4;
    std::vector<index_t> shape;
    std::vector<double> values;
    std::vector<std::int64_t> ints;

    index_t size() const noexcept { return static_cast<index_t>(values.size()); }

    /// As an owning float/double tensor (scalars, shape (), become shape (1)).
    template <class T>
    tensor<T> to_tensor() const {
        std::vector<index_t> s = shape.empty() ? std::vector<index_t>{1} : shape;
        tensor<T> t(s);
        for (index_t i = 0; i < size(); ++i) t[i] = static_cast<T>(values[static_cast<std::size_t>(i)]);
        return t;
    }
};

namespace detail {

inline void bad(std::string_view what) { fail("npy", what); }

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.remove_suffix(1);
    return s;
}

/// Value of `'key': <value>` in the header dict, up to the matching delimiter.
inline std::string_view dict_value(std::string_view header, std::string_view key) {
    std::string k(1, '\'');
    k.append(key); // built by appends: g++ 12 -O3 warns falsely (-Wrestrict) on "'" + key
    k.append("':");
    const auto pos = header.find(k);
    if (pos == std::string_view::npos) bad("header lacks '" + std::string(key) + "'");
    std::string_view rest = trim(header.substr(pos + k.size()));
    if (rest.empty()) bad("header value missing");
    if (rest.front() == '(') {
        const auto end = rest.find(')');
        if (end == std::string_view::npos) bad("unterminated shape tuple");
        return rest.substr(0, end + 1);
    }
    if (rest.front() == '\'') {
        const auto end = rest.find('\'', 1);
        if (end == std::string_view::npos) bad("unterminated string");
        return rest.substr(1, end - 1);
    }
    const auto end = rest.find_first_of(",}");
    if (end == std::string_view::npos) bad("unterminated value");
    return trim(rest.substr(0, end));
}

} // namespace detail

/// Parse a whole .npy file held in memory.
inline array parse(std::string_view bytes) {
    using detail::bad;
    if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) bad("not an .npy file (bad magic)");
    const auto major = static_cast<unsigned char>(bytes[6]);
    std::size_t header_len = 0, pre = 0;
    if (major == 1) {
        header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
        pre = 10;
    } else if (major == 2 || major == 3) {
        if (bytes.size() < 12) bad("truncated preamble");
        header_len = 0;
        for (int i = 0; i < 4; ++i)
            header_len |= static_cast<std::size_t>(static_cast<unsigned char>(bytes[8 + static_cast<std::size_t>(i)])) << (8 * i);
        pre = 12;
    } else {
        bad("unsupported format version " + std::to_string(major));
    }
    if (bytes.size() < pre + header_len) bad("truncated header");
    const std::string_view header = bytes.substr(pre, header_len);
    array a;
    const auto descr = detail::dict_value(header, "descr");
    std::size_t item = 0;
    if (descr == "<f4") a.type = dtype::f4, item = 4;
    else if (descr == "<f8") a.type = dtype::f8, item = 8;
    else if (descr == "<i8") a.type = dtype::i8, item = 8;
    else bad("unsupported dtype '" + std::string(descr) + "' (expected <f4, <f8 or <i8)");
    if (detail::dict_value(header, "fortran_order") != "False") bad("fortran_order arrays are not supported");
    auto shape = detail::dict_value(header, "shape");
    if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') bad("shape must be a tuple");
    shape.remove_prefix(1);
    shape.remove_suffix(1);
    std::size_t count = 1;
    while (!shape.empty()) {
        shape = detail::trim(shape);
        if (shape.empty()) break;
        std::size_t i = 0;
        std::uint64_t v = 0;
        while (i < shape.size() && shape[i] >= '0' && shape[i] <= '9') {
            v = v * 10 + static_cast<std::uint64_t>(shape[i] - '0');
            if (v > (1ull << 40)) bad("shape extent too large");
            ++i;
        }
        if (i == 0) bad("malformed shape");
        a.shape.push_back(static_cast<index_t>(v));
        count *= static_cast<std::size_t>(v);
        if (count > (1ull << 34)) bad("array too large");
        shape.remove_prefix(i);
        shape = detail::trim(shape);
        if (!shape.empty()) {
            if (shape.front() != ',') bad("malformed shape");
            shape.remove_prefix(1);
        }
    }
    const std::size_t data_at = pre + header_len;
    if (bytes.size() - data_at < count * item) bad("truncated data: expected " + std::to_string(count * item) + " bytes");
    const char* d = bytes.data() + data_at;
    a.values.resize(count);
    if (a.type == dtype::i8) a.ints.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
        if (a.type == dtype::f4) {
            float f;
            std::memcpy(&f, d + 4 * i, 4);
            a.values[i] = f;
        } else if (a.type == dtype::f8) {
            std::memcpy(&a.values[i], d + 8 * i, 8);
        } else {
            std::memcpy(&a.ints[i], d + 8 * i, 8);
            a.values[i] = static_cast<double>(a.ints[i]);
        }
    }
    return a;
}

inline array load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("npy", "cannot open '" + path + "'");
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return parse(bytes);
}

/// Serialise as .npy 1.0 (float32 / float64 / int64).
inline std::string serialize(const array& a) {
    std::string shape = "(";
    for (std::size_t i = 0; i < a.shape.size(); ++i) shape += std::to_string(a.shape[i]) + (a.shape.size() == 1 ? "," : (i + 1 < a.shape.size() ? ", " : ""));
    shape += ")";
    const char* descr = a.type == dtype::f4 ? "<f4" : a.type == dtype::f8 ? "<f8" : "<i8";
    std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
    while ((10 + header.size() + 1) % 64) header += ' ';
    header += '\n';
    std::string out = "\x93NUMPY";
    out += '\x01';
    out += '\x00';
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
    out += header;
    for (std::size_t i = 0; i < a.values.size(); ++i) {
        if (a.type == dtype::f4) {
            const float f = static_cast<float>(a.values[i]);
            out.append(reinterpret_cast<const char*>(&f), 4);
        } else if (a.type == dtype::f8) {
            out.append(reinterpret_cast<const char*>(&a.values[i]), 8);
        } else {
            const std::int64_t v = a.ints.empty() ? static_cast<std::int64_t>(a.values[i]) : a.ints[i];
            out.append(reinterpret_cast<const char*>(&v), 8);
        }
    }
    return out;
}

/// Wrap a tensor's values as an array (for results and round trips).
template <class T>
array from_tensor(const tensor<T>& t) {
    array a;
    a.type = std::is_same_v<T, float> ? dtype::f4 : dtype::f8;
    a.shape = t.shape();
    a.values.assign(t.data(), t.data() + t.size());
    return a;
}

} // namespace patchbay::npy
