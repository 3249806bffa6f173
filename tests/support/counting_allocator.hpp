// patchbay tests: a global operator new that counts allocations, to check that a hot path
// allocates nothing. Replacement allocation functions must be defined once per program: include
// this header only in test files (tests/<folder>/*.cpp). A test executable is one translation
// unit, one file or a whole folder (tests/CMakeLists.txt), where #pragma once leaves one copy;
// the folder's other tests then run with the counter too.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace patchbay::test {

inline std::atomic<std::size_t>& allocation_count() noexcept {
    static std::atomic<std::size_t> n{0};
    return n;
}

/// Allocations made while an object of this type lives (by any thread).
class allocation_counter {
public:
    allocation_counter() noexcept : start_(allocation_count().load()) {}
    std::size_t count() const noexcept { return allocation_count().load() - start_; }

private:
    std::size_t start_;
};

namespace counting_detail {
inline void* counted_alloc(std::size_t n) {
    allocation_count().fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
inline void* counted_aligned_alloc(std::size_t n, std::align_val_t a) {
    allocation_count().fetch_add(1, std::memory_order_relaxed);
    const auto al = static_cast<std::size_t>(a);
    const std::size_t size = (n + al - 1) / al * al;
    if (void* p = std::aligned_alloc(al, size ? size : al)) return p;
    throw std::bad_alloc();
}
} // namespace counting_detail

} // namespace patchbay::test

void* operator new(std::size_t n) { return patchbay::test::counting_detail::counted_alloc(n); }
void* operator new[](std::size_t n) { return patchbay::test::counting_detail::counted_alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try { return patchbay::test::counting_detail::counted_alloc(n); } catch (...) { return nullptr; }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try { return patchbay::test::counting_detail::counted_alloc(n); } catch (...) { return nullptr; }
}
void* operator new(std::size_t n, std::align_val_t a) {
    return patchbay::test::counting_detail::counted_aligned_alloc(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
    return patchbay::test::counting_detail::counted_aligned_alloc(n, a);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
