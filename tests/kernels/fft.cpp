// Tests for kernels/fft.hpp: every size 1..64 on each axis and larger mixed / prime sizes against
// a naive DFT in double, with error bounds growing like log n; round trip, linearity, real
// input / output with strided views, shift helpers, batch-split invariance, thread safety.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <memory>
#include <numbers>
#include <random>
#include <thread>
#include <vector>

#include "patchbay/kernels/fft.hpp"

namespace test_kernels_fft {

using namespace patchbay;
using kernels::fft_direction;

namespace {

using cd = std::complex<double>;

/// Naive O(n^2) DFT along one axis of a (count, H, W) array, in double.
void naive_dft_axis(std::vector<cd>& x, index_t count, index_t H, index_t W, bool along_rows,
                    bool inverse) {
    const index_t n = along_rows ? W : H, lines = along_rows ? H : W;
    const index_t step = along_rows ? 1 : W;
    const double sign = inverse ? 1.0 : -1.0;
    std::vector<cd> w(static_cast<std::size_t>(n)), line(static_cast<std::size_t>(n));
    for (index_t k = 0; k < n; ++k) {
        const double a = sign * 2.0 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(n);
        w[static_cast<std::size_t>(k)] = {std::cos(a), std::sin(a)};
    }
    for (index_t c = 0; c < count; ++c)
        for (index_t l = 0; l < lines; ++l) {
            cd* base = x.data() + c * H * W + (along_rows ? l * W : l);
            for (index_t k = 0; k < n; ++k) {
                cd acc = 0;
                for (index_t j = 0; j < n; ++j) acc += base[j * step] * w[static_cast<std::size_t>((j * k) % n)];
                line[static_cast<std::size_t>(k)] = acc;
            }
            for (index_t k = 0; k < n; ++k) base[k * step] = line[static_cast<std::size_t>(k)];
        }
}

/// Reference 2-D DFT (separable naive DFTs in double); the inverse is scaled by 1/(H W).
std::vector<cd> reference(const std::vector<cd>& in, index_t count, index_t H, index_t W, bool inverse) {
    std::vector<cd> x = in;
    naive_dft_axis(x, count, H, W, true, inverse);
    naive_dft_axis(x, count, H, W, false, inverse);
    if (inverse)
        for (auto& v : x) v /= static_cast<double>(H * W);
    return x;
}

template <class T>
std::vector<std::complex<T>> random_planes(index_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<std::complex<T>> v(static_cast<std::size_t>(n));
    for (auto& z : v) {
        const double re = d(rng);
        z = {static_cast<T>(re), static_cast<T>(d(rng))};
    }
    return v;
}

template <class T>
std::vector<cd> widen(const std::vector<std::complex<T>>& v) {
    return {v.begin(), v.end()};
}

struct err_stats {
    double max_err = 0, rms = 0;
};

template <class T>
err_stats compare(const std::vector<std::complex<T>>& got, const std::vector<cd>& ref) {
    err_stats s;
    double ss = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        s.max_err = std::max(s.max_err, std::abs(cd(got[i]) - ref[i]));
        ss += std::norm(ref[i]);
    }
    s.rms = std::sqrt(ss / static_cast<double>(ref.size()));
    return s;
}

/// The error bound: c * eps * log2(n) * rms(reference), n = H*W (at least 2).
template <class T>
double bound(index_t H, index_t W, double rms, double c = 2.0) {
    const double n = static_cast<double>(std::max<index_t>(H * W, 2));
    return c * static_cast<double>(std::numeric_limits<T>::epsilon()) * std::log2(n) * rms;
}

template <class T>
void check_size(index_t count, index_t H, index_t W, unsigned seed, double c = 2.0) {
    INFO("planes " << count << " x " << H << " x " << W);
    patchbay::workspace ws;
    const auto x = random_planes<T>(count * H * W, seed);
    for (bool inverse : {false, true}) {
        INFO((inverse ? "inverse" : "forward"));
        auto got = x;
        kernels::fft2(got.data(), count, H, W, inverse ? fft_direction::inverse : fft_direction::forward, ws);
        const auto ref = reference(widen(x), count, H, W, inverse);
        const auto e = compare(got, ref);
        INFO("max err " << e.max_err << " rms " << e.rms << " bound " << bound<T>(H, W, e.rms, c));
        CHECK(e.max_err <= bound<T>(H, W, e.rms, c));
    }
}

} // namespace

TEST_CASE("fft2 matches a naive DFT for every size 1..64 on each axis", "[kernels][fft]") {
    for (index_t n = 1; n <= 64; ++n) {
        // 1-D along either axis, and 2-D pairs with a partner size that walks over 1..64 too.
        const index_t partner = (n * 37) % 64 + 1;
        check_size<float>(3, n, 1, static_cast<unsigned>(n));
        check_size<float>(3, 1, n, static_cast<unsigned>(n) + 100);
        check_size<float>(9, n, partner, static_cast<unsigned>(n) + 200); // a full chunk + a partial one
        check_size<float>(2, partner, n, static_cast<unsigned>(n) + 300);
    }
}

TEST_CASE("fft2 matches a naive DFT on larger mixed-radix and prime sizes", "[kernels][fft]") {
    check_size<float>(2, 96, 80, 1);
    check_size<float>(2, 128, 128, 2);
    check_size<float>(2, 127, 131, 3);
    check_size<float>(3, 19, 19, 4);
    check_size<float>(5, 5, 7, 5);
    check_size<float>(1, 1, 1009, 6);  // prime: Bluestein over a smooth length
    check_size<float>(1, 1021, 1, 7);
    check_size<float>(1, 1, 1000, 8);  // 8 * 125
    check_size<float>(1, 1024, 1, 9);
    check_size<float>(1, 1, 997 * 2, 10);
    check_size<float>(1, 1, 2053, 11);  // prime, Bluestein length 4320 = 2^5 3^3 5
}

TEST_CASE("fft2 in double precision meets the double-eps bound", "[kernels][fft]") {
    for (auto [h, w] : std::vector<std::pair<index_t, index_t>>{{1, 1}, {5, 7}, {19, 19}, {32, 32}, {96, 80}, {127, 131}, {64, 1}, {1, 53}})
        check_size<double>(5, h, w, static_cast<unsigned>(h * 1000 + w));
}

TEST_CASE("size 1x1 is the identity both ways", "[kernels][fft]") {
    std::vector<std::complex<float>> x{{1.5f, -2.f}, {3.f, 4.f}};
    kernels::fft2(x.data(), 2, 1, 1, fft_direction::forward);
    CHECK(x[0] == std::complex<float>(1.5f, -2.f));
    CHECK(x[1] == std::complex<float>(3.f, 4.f));
    kernels::fft2(x.data(), 2, 1, 1, fft_direction::inverse);
    CHECK(x[1] == std::complex<float>(3.f, 4.f));
}

TEST_CASE("fft2 round trip and linearity", "[kernels][fft]") {
    patchbay::workspace ws;
    for (auto [h, w] : std::vector<std::pair<index_t, index_t>>{{32, 32}, {19, 19}, {5, 7}, {96, 80}, {11, 64}}) {
        INFO(h << "x" << w);
        const index_t count = 10, n = count * h * w;
        const auto x = random_planes<float>(n, 11);
        auto y = x;
        kernels::fft2(y.data(), count, h, w, fft_direction::forward, ws);
        kernels::fft2(y.data(), count, h, w, fft_direction::inverse, ws);
        double max_err = 0;
        for (index_t i = 0; i < n; ++i) max_err = std::max(max_err, double(std::abs(y[size_t(i)] - x[size_t(i)])));
        CHECK(max_err <= 2 * bound<float>(h, w, 1.0));

        // F(a x + b z) = a F(x) + b F(z)
        const auto z = random_planes<float>(n, 12);
        const std::complex<float> a(0.7f, -1.3f), b(-2.1f, 0.4f);
        std::vector<std::complex<float>> mix(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) mix[size_t(i)] = a * x[size_t(i)] + b * z[size_t(i)];
        auto fx = x, fz = z;
        kernels::fft2(fx.data(), count, h, w, fft_direction::forward, ws);
        kernels::fft2(fz.data(), count, h, w, fft_direction::forward, ws);
        kernels::fft2(mix.data(), count, h, w, fft_direction::forward, ws);
        double lin_err = 0, ss = 0;
        for (index_t i = 0; i < n; ++i) {
            const auto expect = a * fx[size_t(i)] + b * fz[size_t(i)];
            lin_err = std::max(lin_err, double(std::abs(mix[size_t(i)] - expect)));
            ss += std::norm(expect);
        }
        const double rms = std::sqrt(ss / double(n));
        CHECK(lin_err <= 2 * bound<float>(h, w, rms));
    }
}

TEST_CASE("planes are independent: batch split and out-of-place give identical bits", "[kernels][fft]") {
    // 37 planes: full chunks of V planes (one lane per plane) and a rest done line by line (lanes
    // across rows, then columns) for every SIMD width up to 32 lanes; one plane alone is done
    // line by line: every lane runs the same operations, so the bits agree
    const index_t H = 24, W = 20, count = 37;
    const auto x = random_planes<float>(count * H * W, 21);
    for (auto dir : {fft_direction::forward, fft_direction::inverse}) {
        auto all = x;
        kernels::fft2(all.data(), count, H, W, dir);
        for (index_t c = 0; c < count; ++c) {
            std::vector<std::complex<float>> one(x.begin() + c * H * W, x.begin() + (c + 1) * H * W);
            kernels::fft2(one.data(), 1, H, W, dir);
            for (index_t i = 0; i < H * W; ++i) REQUIRE(one[size_t(i)] == all[size_t(c * H * W + i)]);
        }
        std::vector<std::complex<float>> out(x.size());
        const auto plan = kernels::fft_plan<float>(H, W);
        patchbay::workspace ws;
        plan->execute(x.data(), out.data(), count, dir, ws);
        CHECK(out == all);
    }
}

TEST_CASE("a call big enough to request its lines ahead gives the bits of small calls", "[kernels][fft]") {
    // 1027 planes of 32 x 32: 8.4 MiB each way, past PATCHBAY_FFT_STREAM_BYTES (8 MiB) in place
    // and out of place, so every chunk requests its output and the next chunk's input while it
    // runs; calls of 79 planes stay below it. The last chunk has no next one, and the rest
    // (1027 mod V) goes line by line.
    const index_t H = 32, W = 32, count = 1027, part = 79;
    const auto x = random_planes<float>(count * H * W, 22);
    const auto plan = kernels::fft_plan<float>(H, W);
    patchbay::workspace ws;
    for (auto dir : {fft_direction::forward, fft_direction::inverse}) {
        auto small = x;
        for (index_t c = 0; c < count; c += part)
            plan->execute(small.data() + c * H * W, small.data() + c * H * W, std::min(part, count - c), dir, ws);
        std::vector<std::complex<float>> out(x.size());
        plan->execute(x.data(), out.data(), count, dir, ws);
        CHECK(out == small);
        auto inplace = x;
        plan->execute(inplace.data(), inplace.data(), count, dir, ws);
        CHECK(inplace == small);
    }
}

TEST_CASE("real input and real-part output, contiguous and strided", "[kernels][fft]") {
    const index_t count = 6, H = 12, W = 10;
    std::mt19937 rng(5);
    std::normal_distribution<float> d;
    std::vector<float> real(size_t(count * H * W));
    for (auto& v : real) v = d(rng);
    std::vector<std::complex<float>> cplx(real.begin(), real.end());
    kernels::fft2(cplx.data(), count, H, W, fft_direction::forward);

    std::vector<std::complex<float>> spec(real.size());
    kernels::fft2_real<float>(view<const float, 3>(real.data(), {count, H, W}), spec.data());
    CHECK(spec == cplx);

    // strided input: every other column of a wider buffer, planes in reverse order
    std::vector<float> wide(size_t(count * H * W * 2));
    for (index_t c = 0; c < count; ++c)
        for (index_t i = 0; i < H * W; ++i) wide[size_t(((count - 1 - c) * H * W + i) * 2)] = real[size_t(c * H * W + i)];
    view<const float, 3> strided(wide.data() + (count - 1) * H * W * 2, {count, H, W}, {-H * W * 2, W * 2, 2});
    std::vector<std::complex<float>> spec2(real.size());
    kernels::fft2_real<float>(strided, spec2.data());
    CHECK(spec2 == cplx);

    // modify the spectrum asymmetrically (as FreeU does), then take the real part of the inverse
    for (index_t c = 0; c < count; ++c) spec[size_t(c * H * W + 1)] *= 3.f;
    auto full = spec;
    kernels::fft2(full.data(), count, H, W, fft_direction::inverse);
    std::vector<float> back(real.size(), -1.f);
    const auto spec_copy = spec;
    kernels::ifft2_real<float>(spec.data(), view<float, 3>(back.data(), {count, H, W}));
    CHECK(spec == spec_copy); // input untouched
    for (size_t i = 0; i < back.size(); ++i) REQUIRE(back[i] == full[i].real());

    std::vector<float> back_wide(size_t(count * H * W * 2), -7.f);
    kernels::ifft2_real<float>(spec.data(), view<float, 3>(back_wide.data(), {count, H, W}, {H * W * 2, W * 2, 2}));
    for (size_t i = 0; i < back.size(); ++i) {
        REQUIRE(back_wide[2 * i] == back[i]);
        REQUIRE(back_wide[2 * i + 1] == -7.f); // untouched
    }
}

TEST_CASE("shift helpers match numpy's fftshift / ifftshift rolls", "[kernels][fft]") {
    for (index_t n = 1; n <= 9; ++n) {
        // numpy: fftshift(x)[s] = x[(s - n//2) mod n]; ifftshift(x)[s] = x[(s + n//2) mod n]
        for (index_t s = 0; s < n; ++s) {
            CHECK(kernels::fftshift_to_natural(s, n) == ((s - n / 2) % n + n) % n);
            CHECK(kernels::ifftshift_to_natural(s, n) == (s + n / 2) % n);
            CHECK(kernels::natural_to_fftshift(kernels::fftshift_to_natural(s, n), n) == s);
            CHECK(kernels::natural_to_ifftshift(kernels::ifftshift_to_natural(s, n), n) == s);
            // after fftshift, position s holds frequency s - n//2
            CHECK(kernels::fft_frequency(kernels::fftshift_to_natural(s, n), n) == s - n / 2);
        }
    }
    CHECK(kernels::fft_frequency(3, 7) == 3);
    CHECK(kernels::fft_frequency(4, 7) == -3);
    CHECK(kernels::fft_frequency(4, 8) == -4);
}

TEST_CASE("one plan shared by several threads gives identical results", "[kernels][fft]") {
    const index_t H = 19, W = 32, count = 20;
    const auto x = random_planes<float>(count * H * W, 31);
    auto expect = x;
    kernels::fft2(expect.data(), count, H, W, fft_direction::forward);

    const int nthreads = 6;
    std::vector<std::shared_ptr<const kernels::fft_plan_2d>> got_plans(nthreads);
    std::vector<int> ok(nthreads, 0);
    std::atomic<int> go{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t)
        threads.emplace_back([&, t] {
            while (go.load() == 0) std::this_thread::yield();
            // all threads also race to build a fresh plan in the cache
            got_plans[size_t(t)] = kernels::fft_plan<float>(17, 23);
            int good = 1;
            for (int rep = 0; rep < 20; ++rep) {
                auto y = x;
                kernels::fft2(y.data(), count, H, W, fft_direction::forward);
                good &= y == expect ? 1 : 0;
            }
            ok[size_t(t)] = good;
        });
    go = 1;
    for (auto& th : threads) th.join();
    for (int t = 0; t < nthreads; ++t) {
        CHECK(ok[size_t(t)] == 1);
        CHECK(got_plans[size_t(t)] == got_plans[0]);
    }
}

TEST_CASE("bad sizes and counts are rejected", "[kernels][fft]") {
    std::vector<std::complex<float>> x(4);
    CHECK_THROWS_AS(kernels::fft_plan_2d(0, 4), patchbay::error);
    CHECK_THROWS_AS(kernels::fft_plan_2d(4, -1), patchbay::error);
    CHECK_THROWS_AS(kernels::fft2(x.data(), -1, 2, 2, fft_direction::forward), patchbay::error);
    CHECK_THROWS_AS(kernels::fft2<float>(nullptr, 1, 2, 2, fft_direction::forward), patchbay::error);
    kernels::fft2<float>(nullptr, 0, 2, 2, fft_direction::forward); // nothing to do
    const auto plan = kernels::fft_plan<float>(2, 2);
    std::vector<float> r(8);
    patchbay::workspace ws;
    CHECK_THROWS_AS(plan->forward_real(view<const float, 3>(r.data(), {2, 2, 3}), x.data(), ws), patchbay::error);
}

} // namespace test_kernels_fft
