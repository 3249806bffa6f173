// patchbay: the reduction engine. One blocked accumulation serves every reduction:
//
//   reduce<K>(f, in...)                           K sums over every element
//   transform_reduce<K>(out, f, g, in...)         out = f(in...) and the K sums of g(out, in...)
//   reduce_columns<K, D>(terms, sink, in...)      per column: sums over dims [1, D) for each
//                                                 item (dim 0) and column (dims [D, R) flattened)
//   reduce_columns_map<K, D>(out, terms, factor, apply, in...)
//                                                 ... then out = apply(factor(column sums), in...)
//   reduce_channels<K>, reduce_channels_map<K>    per pixel: the column forms with D = 2 (the sums
//                                                 run over the channels), sums kept in T
//
// Accuracy: terms are summed in the input precision T over blocks of reduce_block per SIMD
// lane (per column for the column forms, rows in order) and the blocks in double, so long
// tensors keep float32 accuracy (the relative error does not grow with the length). The
// channel forms keep their block sums in T: channel counts are small and their consumers
// compute in T from them.
//
// The callables are generic: they get SIMD batches on unit-stride runs and scalars on
// strided data and tails, so both paths compute the same expression (and the column forms
// agree bit for bit between layouts). Functors and pointers are copied into locals before
// the loops: reached through references the compiler must reload them after every store.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "patchbay/core/config.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/rows.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels {

/// Terms per SIMD lane (per column for the column forms) summed in the input precision
/// before a block goes to double.
inline constexpr index_t reduce_block = 16;

namespace reduce_detail {

/// Independent accumulator sets over a row: they hide the add latency that bounds a single
/// chain (registers permitting).
template <std::size_t K>
inline constexpr index_t row_unroll = K <= 3 ? 4 : 2;

template <class V, std::size_t K>
PATCHBAY_ALWAYS_INLINE std::array<V, K> zeros() noexcept {
    std::array<V, K> a;
    a.fill(V(simd::scalar_t<V>(0)));
    return a;
}

/// Sums terms(i) (K batches B for the elements i .. i+W-1) over a unit-stride run while whole
/// batches fit in len: blocks of reduce_block batches per accumulator set, each finished
/// block added lane by lane to double accumulators, the lanes added to total once at the end.
/// Returns the first element not summed (where the scalar tail starts).
template <std::size_t K, class B, class Terms>
PATCHBAY_ALWAYS_INLINE index_t blocked_run(const Terms& terms, index_t len, std::array<double, K>& total) {
    using T = simd::scalar_t<B>;
    constexpr std::size_t W = B::size;
    constexpr index_t Wi = static_cast<index_t>(W);
    constexpr index_t U = row_unroll<K>;
    std::array<simd::wide_sum<T>, K> lanes;
    index_t i = 0;
    while (i + U * Wi <= len) {
        std::array<std::array<B, K>, static_cast<std::size_t>(U)> acc;
        for (auto& a : acc) a = zeros<B, K>();
        const index_t stop = std::min(len - U * Wi, i + U * Wi * (reduce_block - 1));
        for (; i <= stop; i += U * Wi)
            simd::unrolled<static_cast<std::size_t>(U)>([&](auto u) PATCHBAY_INLINE_LAMBDA {
                const auto t = terms(i + index_t(u) * Wi);
                simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA { acc[u][k] += t[k]; });
            });
        simd::unrolled<static_cast<std::size_t>(U)>([&](auto u) PATCHBAY_INLINE_LAMBDA { simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA { lanes[k].add(acc[u][k]); }); });
    }
    if (i + Wi <= len) { // fewer than U batches left: one set
        auto acc = zeros<B, K>();
        for (; i + Wi <= len; i += Wi) {
            const auto t = terms(i);
            simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA { acc[k] += t[k]; });
        }
        simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA { lanes[k].add(acc[k]); });
    }
    for (std::size_t k = 0; k < K; ++k) {
        alignas(simd::alignment) double lane[W];
        lanes[k].store(lane);
        for (std::size_t j = 0; j < W; ++j) total[k] += lane[j];
    }
    return i;
}

template <std::size_t K, class X>
PATCHBAY_ALWAYS_INLINE void add_terms(std::array<double, K>& total, const X& t) noexcept {
    for (std::size_t k = 0; k < K; ++k) total[k] += static_cast<double>(t[k]);
}

/// One row of reduce: pointers and strides per input, the functor by value (a local).
template <std::size_t K, class T, class F, std::size_t N, std::size_t... I>
PATCHBAY_ALWAYS_INLINE void reduce_row(F f, std::array<const T*, N> p, std::array<index_t, N> st,
                                       index_t len, std::array<double, K>& total, std::index_sequence<I...>) {
    index_t i = 0;
    if constexpr (simd::enabled) {
        using B = simd::batch<T>;
        if (std::all_of(st.begin(), st.end(), [](index_t s) { return s == 1; }))
            i = blocked_run<K, B>([&](index_t at) { return f(simd::in_register(B::load_unaligned(p[I] + at))...); }, len, total);
    }
    for (; i < len; ++i) add_terms<K>(total, f(p[I][i * st[I]]...));
}

/// One row of transform_reduce: out[i] = f(in[i]...), terms g(out[i], in[i]...).
template <std::size_t K, class T, class F, class G, std::size_t M, std::size_t... I>
PATCHBAY_ALWAYS_INLINE void transform_reduce_row(F f, G g, T* out, index_t out_stride, std::array<const T*, M> p,
                                                 std::array<index_t, M> st, index_t len,
                                                 std::array<double, K>& total, std::index_sequence<I...>) {
    index_t i = 0;
    if constexpr (simd::enabled) {
        using B = simd::batch<T>;
        if (out_stride == 1 && ((st[I] == 1) && ...))
            i = blocked_run<K, B>(
                [&](index_t at) {
                    const std::array<B, M> x{B::load_unaligned(p[I] + at)...};
                    const B y(f(x[I]...));
                    simd::store(out + at, y);
                    return g(y, x[I]...);
                },
                len, total);
    }
    for (; i < len; ++i) {
        const std::array<T, M> x{p[I][i * st[I]]...};
        const T y = T(f(x[I]...));
        out[i * out_stride] = y;
        add_terms<K>(total, g(y, x[I]...));
    }
}

} // namespace reduce_detail

/// Sums K terms over every element of same-shaped views: f(a, b, ...) returns std::array<X, K>
/// where X is a batch or a scalar. Returns the K sums in double.
template <std::size_t K, std::size_t R, class F, class T0, class... Tn>
std::array<double, K> reduce(F&& f, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    using T = std::remove_const_t<T0>;
    static_assert((std::is_same_v<std::remove_const_t<Tn>, T> && ...),
                  "reduce: all views must share the element type.");
    constexpr std::size_t N = 1 + sizeof...(Tn);
    const std::array<std::array<index_t, R>, N> strides{v0.strides(), vn.strides()...};
    const std::array<const T*, N> src{v0.data_handle(), vn.data_handle()...};
    std::array<double, K> total{};
    detail::for_each_row<R, N>(
        v0.extents(), strides,
        [&](const std::array<index_t, N>& off, index_t len, const std::array<index_t, N>& st) {
            std::array<const T*, N> p{};
            for (std::size_t v = 0; v < N; ++v) p[v] = src[v] + off[v];
            reduce_detail::reduce_row<K, T>(f, p, st, len, total, std::make_index_sequence<N>{});
        });
    return total;
}

/// Fused write and reduce: out[i] = f(in...[i]) for every element, and the K sums of
/// g(out[i], in...[i]) from the same pass (same blocking and accuracy as reduce). `out` may be
/// exactly one of the inputs (each element is read before it is written).
template <std::size_t K, class T, std::size_t R, class F, class G, class... In>
std::array<double, K> transform_reduce(view<T, R> out, F&& f, G&& g, const view<In, R>&... in) {
    static_assert((std::is_same_v<std::remove_const_t<In>, T> && ...),
                  "transform_reduce: inputs and output must share the element type.");
    constexpr std::size_t M = sizeof...(In);
    std::array<double, K> total{};
    detail::for_each_output_row<T, R, M>(
        out.data_handle(), out.extents(), {out.strides(), in.strides()...}, {in.data_handle()...},
        [&](T* o, index_t so, const std::array<const T*, M>& p, const std::array<index_t, M>& ps, index_t len) {
            reduce_detail::transform_reduce_row<K, T>(f, g, o, so, p, ps, len, total, std::make_index_sequence<M>{});
        });
    return total;
}

// ---- whole-sample reductions (one value per batch item over dims 1..R-1) ----------------

/// Sum of each batch item.
template <class T, std::size_t R, class Out>
void sample_sum(const view<T, R>& x, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b)
        out[b] = reduce<1>([](auto a) { return std::array{a}; }, x.batch_slice(b, 1))[0];
}

/// Dot product of two same-shaped tensors per batch item.
template <class A, class B, std::size_t R, class Out>
void sample_dot(const view<A, R>& a, const view<B, R>& b, Out&& out) {
    for (index_t i = 0; i < a.extent(0); ++i)
        out[i] = reduce<1>([](auto x, auto y) { return std::array{x * y}; }, a.batch_slice(i, 1),
                           b.batch_slice(i, 1))[0];
}

/// Sum of squares per batch item.
template <class T, std::size_t R, class Out>
void sample_sum_sq(const view<T, R>& x, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b)
        out[b] = reduce<1>([](auto a) { return std::array{a * a}; }, x.batch_slice(b, 1))[0];
}

/// L2 norm per batch item.
template <class T, std::size_t R, class Out>
void sample_l2_norm(const view<T, R>& x, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b)
        out[b] = std::sqrt(
            reduce<1>([](auto a) { return std::array{a * a}; }, x.batch_slice(b, 1))[0]);
}

/// Mean and standard deviation from a sum and a sum of squares about a shift. `correction`
/// is 0 (population) or 1 (Bessel, torch.std's default). With one element and correction 1
/// torch gives NaN; the caller decides what to do with n <= correction (here: std = 0).
struct moments {
    double mean = 0, std = 0;
};

/// Mean and std (with correction) of each batch item. Two passes for accuracy: the mean
/// first, then squares about it (torch does the same).
template <class T, std::size_t R, class Out>
void sample_mean_std(const view<T, R>& x, int correction, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b) {
        const auto xb = x.batch_slice(b, 1);
        const double n = static_cast<double>(xb.size());
        const double mean = reduce<1>([](auto a) { return std::array{a}; }, xb)[0] / n;
        const auto m = static_cast<std::remove_const_t<T>>(mean);
        const double ss = reduce<1>(
            [m](auto a) {
                auto d = a - m;
                return std::array{d * d};
            },
            xb)[0];
        const double denom = n - correction;
        out[b] = moments{mean, denom > 0 ? std::sqrt(ss / denom) : 0.0};
    }
}

// ---- per-column reductions ------------------------------------------------------------------

namespace reduce_detail {

/// Stack budget of a tile's K sums, and the tile limits (tiles are multiples of tile_align
/// columns; strided tiles keep a table of column offsets per view).
inline constexpr std::size_t tile_sum_bytes = 16384;
inline constexpr index_t tile_align = 64;
inline constexpr index_t strided_tile = 256;
/// Input bytes a mapped tile may span: it must stay in L2 between the reduction and the map,
/// while long column runs let the hardware prefetcher stream each row.
inline constexpr index_t map_tile_bytes = 192 * 1024;

template <std::size_t K, class Acc>
inline constexpr index_t tile_max =
    std::min<index_t>(2048, static_cast<index_t>(tile_sum_bytes / (K * sizeof(Acc))) / tile_align * tile_align);

/// The views as (items = dim 0, rows = dims [1, D), columns = dims [D, R)), rows and columns
/// each coalesced jointly over all V views.
template <std::size_t R, std::size_t D, std::size_t V>
struct axis_layout {
    static_assert(D >= 2 && D < R, "the column forms need 2 <= D < R");
    static constexpr std::size_t RD = D - 1, CD = R - D;
    index_t items = 0, rows = 1, cols = 1;
    std::array<index_t, V> item_stride{};
    detail::joint_layout<RD, V> row;
    detail::joint_layout<CD, V> col;
    bool packed = true; ///< columns are one unit-stride run in every view

    axis_layout(const std::array<index_t, R>& ext, const std::array<std::array<index_t, R>, V>& str) noexcept {
        items = ext[0];
        std::array<index_t, RD> re{};
        std::array<index_t, CD> ce{};
        std::array<std::array<index_t, RD>, V> rs{};
        std::array<std::array<index_t, CD>, V> cs{};
        for (std::size_t r = 1; r < D; ++r) rows *= (re[r - 1] = ext[r]);
        for (std::size_t r = D; r < R; ++r) cols *= (ce[r - D] = ext[r]);
        for (std::size_t v = 0; v < V; ++v) {
            item_stride[v] = str[v][0];
            for (std::size_t r = 1; r < D; ++r) rs[v][r - 1] = str[v][r];
            for (std::size_t r = D; r < R; ++r) cs[v][r - D] = str[v][r];
        }
        row = detail::coalesce<RD, V>(re, rs);
        col = detail::coalesce<CD, V>(ce, cs);
        packed = simd::enabled && col.dims == 1; // (without SIMD every layout takes one path)
        for (std::size_t v = 0; v < V; ++v) packed = packed && col.stride[v][0] == 1;
    }

    /// Columns per tile: `mapped` tiles are re-read by the map, so they are sized to stay in
    /// cache (or, when not even tile_align columns fit, made long for streaming).
    template <std::size_t K, class Acc, class T>
    index_t tile(bool mapped, std::size_t inputs) const noexcept {
        constexpr index_t most = tile_max<K, Acc>;
        static_assert(most >= strided_tile, "too many sums for a tile");
        if (!packed) return strided_tile;
        if (!mapped) return most;
        const index_t per_column = std::max<index_t>(rows * static_cast<index_t>(inputs * sizeof(T)), 1);
        const index_t fit = map_tile_bytes / per_column;
        if (fit < tile_align) return most;
        return std::min(fit, most) / tile_align * tile_align;
    }

    /// Element offsets of columns c0 .. c0+len-1 of every view (the strided path).
    void column_offsets(index_t c0, index_t len, index_t (*off)[strided_tile]) const noexcept {
        detail::layout_walker<CD, V> w(col, col.dims);
        w.seek(c0);
        for (index_t j = 0; j < len; ++j) {
            for (std::size_t v = 0; v < V; ++v) off[v][j] = w.off[v];
            w.next();
        }
    }
};

/// How a packed sweep leaves its sums: in the block's partial sums, or as the tile's sums
/// (set by the first block, added by later ones).
enum class sweep_end { keep, set, add };

/// Stores (First) or adds a block's partial sums into a tile's sums at dst, aligned.
template <class Acc, bool First, class T, class A>
PATCHBAY_ALWAYS_INLINE void flush_block(Acc* dst, const xsimd::batch<T, A>& part) noexcept {
    using B = xsimd::batch<T, A>;
    if constexpr (std::is_same_v<Acc, T>) {
        if constexpr (First) simd::store_aligned(dst, part);
        else simd::store_aligned(dst, B::load_aligned(dst) + part);
    } else {
        using D = simd::batch<double>;
        const auto wide = simd::to_double(part);
        for (std::size_t i = 0; i < wide.size(); ++i) {
            double* d = dst + i * D::size;
            if constexpr (First) simd::store_aligned(d, wide[i]);
            else simd::store_aligned(d, D::load_aligned(d) + wide[i]);
        }
    }
}
/// As flush_block, for the first n lanes (or a scalar), the first block known at run time.
template <class Acc, class T, class A>
PATCHBAY_ALWAYS_INLINE void flush_lanes(Acc* dst, const xsimd::batch<T, A>& part, bool first, index_t n) noexcept {
    using B = xsimd::batch<T, A>;
    if (n == static_cast<index_t>(B::size)) {
        if (first) flush_block<Acc, true>(dst, part);
        else flush_block<Acc, false>(dst, part);
    } else {
        alignas(simd::alignment) T tmp[B::size];
        part.store_aligned(tmp);
        for (index_t j = 0; j < n; ++j)
            dst[j] = first ? static_cast<Acc>(tmp[j]) : dst[j] + static_cast<Acc>(tmp[j]);
    }
}
template <class Acc, class T>
    requires std::is_arithmetic_v<T>
PATCHBAY_ALWAYS_INLINE void flush_lanes(Acc* dst, T part, bool first) noexcept {
    *dst = first ? static_cast<Acc>(part) : *dst + static_cast<Acc>(part);
}

/// A batch of the n <= lanes values at(0) .. at(n-1), zero in the lanes past n: the strided
/// columns and the tails run the same batch code as the packed columns, so every column is
/// computed alike (bit for bit, whatever the compiler fuses). Every batch these kernels hand
/// to a functor, loaded, partial or gathered, passes through simd::in_register: with its
/// lanes unknown, g++ contracts the functor's multiply-adds alike in every copy.
template <class B, class At>
PATCHBAY_ALWAYS_INLINE B gather(index_t n, At at) noexcept {
    using T = simd::scalar_t<B>;
    alignas(simd::alignment) T tmp[B::size];
    for (index_t l = 0; l < static_cast<index_t>(B::size); ++l) tmp[l] = l < n ? at(l) : T(0);
    return simd::in_register(B::load_aligned(tmp));
}

/// Rows a packed tile sweep reads at once: their streams, times the inputs, stay few enough
/// for the hardware prefetchers.
template <std::size_t N>
inline constexpr index_t rows_per_sweep = N <= 1 ? 8 : N == 2 ? 4 : 2;

/// Sums the terms over every row for the columns c0 .. c0+len-1 of one item into
/// sums[k][0 .. len): rows in blocks of reduce_block summed in T, blocks in Acc. `base` points
/// at the item in each input; `coloff` holds the column offsets on the strided path;
/// `partial` is scratch for K x len values of T.
template <std::size_t K, class Acc, class T, std::size_t N, std::size_t RD, std::size_t V, class Terms,
          std::size_t... I>
[[gnu::noinline]] void sum_tile(Terms terms, const std::array<const T*, N>& base, const detail::joint_layout<RD, V>& row,
              index_t rows, bool packed, index_t c0, index_t len, const index_t (*coloff)[strided_tile],
              const std::array<Acc*, K>& sums, const std::array<T*, K>& partial, std::index_sequence<I...>) {
    if (rows == 0)
        for (std::size_t k = 0; k < K; ++k) std::fill_n(sums[k], len, Acc(0));
    detail::layout_walker<RD, V> walk(row, row.dims);
    for (index_t r0 = 0; r0 < rows; r0 += reduce_block) {
        const index_t nb = std::min(reduce_block, rows - r0);
        const bool first = r0 == 0;
        // the block's row starts in each input (at column c0 on the packed path)
        std::array<std::array<const T*, reduce_block>, N> rp{};
        for (index_t r = 0; r < nb; ++r) {
            for (std::size_t v = 0; v < N; ++v)
                rp[v][static_cast<std::size_t>(r)] = base[v] + walk.off[v] + (packed ? c0 : 0);
            walk.next();
        }
        if constexpr (simd::enabled) {
            using B = simd::batch<T>;
            constexpr index_t W = static_cast<index_t>(B::size);
            // the K partial sums of the block's rows for one batch of columns
            auto block_sums = [&](auto load) {
                auto part = zeros<B, K>();
                for (index_t r = 0; r < nb; ++r) {
                    const auto t = terms(load(I, static_cast<std::size_t>(r))...);
                    for (std::size_t k = 0; k < K; ++k) part[k] += t[k];
                }
                return part;
            };
            index_t j = 0;
            if (packed) {
                // A few rows at a time across the whole tile (more concurrent row streams than
                // the prefetchers track make the loads latency-bound), the block's running
                // sums kept in `partial` between sweeps. The adds happen in the same order
                // as with the whole block in registers, so the grouping does not change a bit.
                constexpr index_t U = K == 1 ? 4 : K == 2 ? 2 : 1; // column batches per step (registers permitting)
                const index_t full = len - len % W;
                // (the sweep's start and end are template arguments: no selects in the loop)
                // `count` rows from g0: a compile-time count for whole groups (their loop
                // unrolls and the row pointers stay in registers), a run-time one otherwise
                auto sweep_tile = [&](index_t g0, auto count, auto resume, auto end) {
                    // locals, not the captures: reached through references they would be
                    // reloaded after every store of a running sum (a vector store may alias
                    // anything)
                    const Terms tm = terms;
                    const std::array<T*, K> pk = partial;
                    const std::array<Acc*, K> sk = sums;
                    const index_t n_full = full;
                    std::array<std::array<const T*, rows_per_sweep<N>>, N> gp;
                    for (std::size_t v = 0; v < N; ++v)
                        for (index_t r = 0; r < count; ++r)
                            gp[v][static_cast<std::size_t>(r)] = rp[v][static_cast<std::size_t>(g0 + r)];
                    auto step = [&](index_t at, auto unroll) {
                        constexpr std::size_t UU = static_cast<std::size_t>(decltype(unroll)::value);
                        std::array<std::array<B, K>, UU> part;
                        simd::unrolled<UU>([&](auto u) PATCHBAY_INLINE_LAMBDA {
                            simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA {
                                if constexpr (decltype(resume)::value) part[u][k] = B::load_aligned(pk[k] + at + index_t(u) * W);
                                else part[u][k] = B(T(0));
                            });
                        });
                        // (rows stay a loop: unrolled in the source, each row would be a call
                        // of `terms` of its own, and g++ stops inlining heavy ones, Mahiro's)
                        for (index_t r = 0; r < count; ++r) {
                            const auto rr = static_cast<std::size_t>(r);
                            simd::unrolled<UU>([&](auto u) PATCHBAY_INLINE_LAMBDA {
                                const auto t = tm(simd::in_register(B::load_unaligned(gp[I][rr] + at + index_t(u) * W))...);
                                simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA { part[u][k] += t[k]; });
                            });
                        }
                        simd::unrolled<UU>([&](auto u) PATCHBAY_INLINE_LAMBDA {
                            simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA {
                                constexpr sweep_end e = decltype(end)::value;
                                if constexpr (e == sweep_end::keep) simd::store_aligned(pk[k] + at + index_t(u) * W, part[u][k]);
                                else flush_block<Acc, e == sweep_end::set>(sk[k] + at + index_t(u) * W, part[u][k]);
                            });
                        });
                    };
                    index_t at = 0;
                    for (; at + U * W <= n_full; at += U * W) step(at, std::integral_constant<index_t, U>{});
                    for (; at < n_full; at += W) step(at, std::integral_constant<index_t, 1>{});
                };
                using keep = std::integral_constant<sweep_end, sweep_end::keep>;
                using set = std::integral_constant<sweep_end, sweep_end::set>;
                using add = std::integral_constant<sweep_end, sweep_end::add>;
                auto sweep_rows = [&](index_t g0, auto count) {
                    const bool last = g0 + count == nb;
                    if (g0 == 0) {
                        if (!last) sweep_tile(g0, count, std::false_type{}, keep{});
                        else if (first) sweep_tile(g0, count, std::false_type{}, set{});
                        else sweep_tile(g0, count, std::false_type{}, add{});
                    } else {
                        if (!last) sweep_tile(g0, count, std::true_type{}, keep{});
                        else if (first) sweep_tile(g0, count, std::true_type{}, set{});
                        else sweep_tile(g0, count, std::true_type{}, add{});
                    }
                };
                constexpr index_t G = rows_per_sweep<N>;
                index_t g0 = 0;
                for (; g0 + G <= nb; g0 += G) sweep_rows(g0, std::integral_constant<index_t, G>{});
                if (g0 < nb) sweep_rows(g0, nb - g0);
                j = full;
            }
            // the packed tail (partial loads) or every column of a strided tile (gathered)
            for (; j < len; j += W) {
                const index_t n = std::min(W, len - j);
                const auto part = block_sums([&](std::size_t v, std::size_t r) {
                    const T* p = rp[v][r];
                    if (packed) return simd::in_register(simd::load_partial(p + j, n));
                    return gather<B>(n, [&](index_t l) { return p[coloff[v][j + l]]; });
                });
                for (std::size_t k = 0; k < K; ++k) flush_lanes<Acc>(sums[k] + j, part[k], first, n);
            }
        } else {
            for (index_t j = 0; j < len; ++j) { // (no packed path without SIMD)
                auto part = zeros<T, K>();
                for (index_t r = 0; r < nb; ++r) {
                    const auto rr = static_cast<std::size_t>(r);
                    const auto t = terms(rp[I][rr][coloff[I][j]]...);
                    for (std::size_t k = 0; k < K; ++k) part[k] += T(t[k]);
                }
                for (std::size_t k = 0; k < K; ++k) flush_lanes<Acc>(sums[k] + j, part[k], first);
            }
        }
    }
}

/// Per-column factors fac[j] = factor(sums[.][j]): with batches of the T sums (the channel
/// forms), or per column with K doubles (the column forms: many rows per column, so this
/// costs nothing).
template <std::size_t K, bool Batches, class Acc, class T, class Factor>
[[gnu::noinline]] void tile_factors(Factor factor, const std::array<Acc*, K>& sums, index_t len, T* fac) {
    if constexpr (simd::enabled && Batches) {
        using B = simd::batch<T>;
        constexpr index_t W = static_cast<index_t>(B::size);
        index_t j = 0;
        for (; j + W <= len; j += W) {
            std::array<B, K> s;
            for (std::size_t k = 0; k < K; ++k) s[k] = simd::in_register(B::load_aligned(sums[k] + j));
            simd::store_aligned(fac + j, B(factor(s)));
        }
        if (j < len) {
            std::array<B, K> s;
            for (std::size_t k = 0; k < K; ++k) s[k] = simd::in_register(simd::load_partial(sums[k] + j, len - j));
            simd::store_partial(fac + j, B(factor(s)), len - j);
        }
    } else {
        for (index_t j = 0; j < len; ++j) {
            std::array<Acc, K> s;
            for (std::size_t k = 0; k < K; ++k) s[k] = sums[k][j];
            fac[j] = T(factor(s));
        }
    }
}

/// out = apply(fac[column], in...) over every row of the tile; view N is out.
template <class T, std::size_t N, std::size_t RD, class Apply, std::size_t... I>
[[gnu::noinline]] void map_tile(Apply apply, const std::array<const T*, N>& base, T* out, const detail::joint_layout<RD, N + 1>& row,
              index_t rows, bool packed, index_t c0, index_t len, const index_t (*coloff)[strided_tile],
              const T* fac, std::index_sequence<I...>) {
    detail::layout_walker<RD, N + 1> walk(row, row.dims);
    for (index_t r = 0; r < rows; ++r, walk.next()) {
        std::array<const T*, N> p{};
        for (std::size_t v = 0; v < N; ++v) p[v] = base[v] + walk.off[v] + (packed ? c0 : 0);
        T* const o = out + walk.off[N] + (packed ? c0 : 0);
        if constexpr (simd::enabled) {
            using B = simd::batch<T>;
            constexpr index_t W = static_cast<index_t>(B::size);
            index_t j = 0;
            if (packed)
                for (; j + W <= len; j += W)
                    simd::store(o + j, B(apply(simd::in_register(B::load_aligned(fac + j)), simd::in_register(B::load_unaligned(p[I] + j))...)));
            // the packed tail (partial loads and stores) or every column of a strided tile
            // (gathered and scattered)
            for (; j < len; j += W) {
                const index_t n = std::min(W, len - j);
                if (packed) {
                    const B f = simd::in_register(simd::load_partial(fac + j, n));
                    simd::store_partial(o + j, B(apply(f, simd::in_register(simd::load_partial(p[I] + j, n))...)), n);
                } else {
                    const B y(apply(gather<B>(n, [&](index_t l) { return fac[j + l]; }),
                                    gather<B>(n, [&](index_t l) { return p[I][coloff[I][j + l]]; })...));
                    alignas(simd::alignment) T tmp[B::size];
                    y.store_aligned(tmp);
                    for (index_t l = 0; l < n; ++l) o[coloff[N][j + l]] = tmp[l];
                }
            }
        } else {
            for (index_t j = 0; j < len; ++j) o[coloff[N][j]] = T(apply(fac[j], p[I][coloff[I][j]]...));
        }
    }
}

/// Channel counts reduce_channels_map keeps in registers (map_few_rows). Not more:
/// each channel is a stream per input, and past about 16 to 24 concurrent streams the hardware
/// prefetchers stop keeping up (16 channels measured 1.8x slower for CFGNorm at 1x16x128x128).
inline constexpr index_t few_rows = 8;

/// The channel forms of columns_map on packed columns with at most few_rows rows: for each
/// batch of columns the rows are summed, the factor taken and the map applied while the batch's
/// rows are still in L1, one pass over the data instead of a tile's three sub-passes (sums,
/// factors, map). The adds, factors and maps are those of sum_tile / tile_factors / map_tile
/// (one block: rows <= reduce_block), so the results are the same bit for bit. The map reads
/// each input row before writing the same row of `out`, so `out` may be one of the inputs.
/// Fixed > 0: compiled for exactly that many rows (`rows` is ignored), so the row loops unroll
/// and the held rows stay in registers: 1.3x to 1.5x faster at 2 to 4 rows than the loops over
/// a run-time count (CFGNorm pre_cfg, 1x4x128x128: 20.6 -> 14.6 us), none faster at 8.
template <std::size_t K, index_t Fixed, class T, std::size_t N, std::size_t RD, class Terms, class Factor, class Apply,
          std::size_t... I>
[[gnu::noinline]] void map_few_rows(Terms terms, Factor factor, Apply apply, const std::array<const T*, N>& base,
                                    T* out, const detail::joint_layout<RD, N + 1>& row, index_t rows_given, index_t len,
                                    std::index_sequence<I...>) {
    const index_t rows = Fixed > 0 ? Fixed : rows_given;
    using B = simd::batch<T>;
    constexpr index_t W = static_cast<index_t>(B::size);
    std::array<std::array<const T*, few_rows>, N> rp{};
    std::array<T*, few_rows> op{};
    detail::layout_walker<RD, N + 1> walk(row, row.dims);
    for (index_t r = 0; r < rows; ++r, walk.next()) {
        for (std::size_t v = 0; v < N; ++v) rp[v][static_cast<std::size_t>(r)] = base[v] + walk.off[v];
        op[static_cast<std::size_t>(r)] = out + walk.off[N];
    }
    // The map takes its inputs from `held`, not from the tensors again. The rows of a tensor
    // usually sit a multiple of 4 KiB apart (and tensors are page-aligned in engines), so the
    // rows x inputs lines of one column batch all fall in the same L1 set; past its 8 ways
    // they evict each other before the map reads them again (measured at 4 page-aligned
    // channels: 2.4x slower, at 8: 3.5x). The copy on the stack spans consecutive sets.
    std::array<std::array<std::array<B, N>, Fixed == 0 ? 4 : 2>, few_rows> held;
    // U batches of columns at once: their sums, roots and divides are independent chains the
    // core overlaps (one batch alone waits on each in turn)
    auto columns = [&](index_t j, auto unroll, auto load, auto store) {
        constexpr auto U = static_cast<std::size_t>(decltype(unroll)::value);
        std::array<std::array<B, K>, U> sums;
        for (auto& s : sums) s = zeros<B, K>();
        // every row; a compile-time count unrolls, each row its own copy (at most 4 rows x 2
        // batches of calls of `terms` and `apply`: g++ still inlines CFGNorm's)
        auto each_row = [&](auto body) PATCHBAY_INLINE_LAMBDA {
            if constexpr (Fixed > 0) simd::unrolled<static_cast<std::size_t>(Fixed)>(body);
            else for (index_t r = 0; r < rows; ++r) body(static_cast<std::size_t>(r));
        };
        each_row([&](auto r) PATCHBAY_INLINE_LAMBDA {
            simd::unrolled<U>([&](auto u) PATCHBAY_INLINE_LAMBDA {
                auto& v = held[r][u];
                ((v[I] = load(rp[I][r] + j + index_t(u) * W)), ...);
                const auto t = terms(simd::in_register(v[I])...);
                simd::unrolled<K>([&](auto k) PATCHBAY_INLINE_LAMBDA { sums[u][k] += t[k]; });
            });
        });
        std::array<B, U> f;
        simd::unrolled<U>([&](auto u) PATCHBAY_INLINE_LAMBDA { f[u] = B(factor(sums[u])); });
        each_row([&](auto r) PATCHBAY_INLINE_LAMBDA {
            simd::unrolled<U>([&](auto u) PATCHBAY_INLINE_LAMBDA { store(op[r] + j + index_t(u) * W, B(apply(f[u], held[r][u][I]...))); });
        });
    };
    auto whole = [](const T* p) { return simd::in_register(B::load_unaligned(p)); };
    auto put = [](T* p, const B& y) { simd::store(p, y); };
    const index_t full = len - len % W;
    index_t j = 0;
    if constexpr (Fixed == 0) // more rows: four batches, two cache lines per row at AVX-512 (8 rows: 57 -> 41 us)
        for (; j + 4 * W <= full; j += 4 * W) columns(j, std::integral_constant<index_t, 4>{}, whole, put);
    for (; j + 2 * W <= full; j += 2 * W) columns(j, std::integral_constant<index_t, 2>{}, whole, put);
    for (; j < full; j += W) columns(j, std::integral_constant<index_t, 1>{}, whole, put);
    if (full < len) {
        const index_t n = len - full;
        columns(full, std::integral_constant<index_t, 1>{}, [n](const T* p) { return simd::in_register(simd::load_partial(p, n)); },
                [n](T* p, const B& y) { simd::store_partial(p, y, n); });
    }
}

/// The column engine: for each item and tile of columns, sums the terms, then calls
/// tile_done(item, c0, len, sums, bases, coloff).
template <std::size_t K, std::size_t D, class Acc, std::size_t R, std::size_t V, class T, std::size_t N, class Terms,
          class TileDone>
void for_each_column_tile(const axis_layout<R, D, V>& L, index_t tile, const std::array<const T*, N>& src,
                          Terms& terms, TileDone&& tile_done) {
    if (L.items == 0 || L.cols == 0) return;
    constexpr index_t most = tile_max<K, Acc>;
    alignas(simd::alignment) Acc sums_store[K][most];
    alignas(simd::alignment) T partial_store[K][most];
    std::array<Acc*, K> sums;
    std::array<T*, K> partial;
    for (std::size_t k = 0; k < K; ++k) {
        sums[k] = sums_store[k];
        partial[k] = partial_store[k];
    }
    index_t coloff[V][strided_tile];
    for (index_t b = 0; b < L.items; ++b) {
        std::array<const T*, N> base;
        for (std::size_t v = 0; v < N; ++v) base[v] = src[v] + b * L.item_stride[v];
        for (index_t c0 = 0; c0 < L.cols; c0 += tile) {
            const index_t len = std::min(tile, L.cols - c0);
            if (!L.packed) L.column_offsets(c0, len, coloff);
            sum_tile<K, Acc, T>(terms, base, L.row, L.rows, L.packed, c0, len, coloff, sums, partial,
                                std::make_index_sequence<N>{});
            tile_done(b, c0, len, sums, base, static_cast<const index_t(*)[strided_tile]>(coloff));
        }
    }
}

template <std::size_t K, std::size_t D, class Acc, class Terms, class Sink, std::size_t R, class T0, class... Tn>
void columns(Terms&& terms, Sink&& sink, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    using T = std::remove_const_t<T0>;
    static_assert((std::is_same_v<std::remove_const_t<Tn>, T> && ...),
                  "reduce_columns: all views must share the element type.");
    constexpr std::size_t N = 1 + sizeof...(Tn);
    const axis_layout<R, D, N> L(v0.extents(), {v0.strides(), vn.strides()...});
    const std::array<const T*, N> src{v0.data_handle(), vn.data_handle()...};
    for_each_column_tile<K, D, Acc>(L, L.template tile<K, Acc, T>(false, N), src, terms,
                                    [&](index_t b, index_t c0, index_t len, const std::array<Acc*, K>& sums,
                                        const std::array<const T*, N>&, const index_t(*)[strided_tile]) {
                                        std::array<const Acc*, K> s;
                                        for (std::size_t k = 0; k < K; ++k) s[k] = sums[k];
                                        sink(b, c0, len, s);
                                    });
}

template <std::size_t K, std::size_t D, class Acc, bool BatchFactor, class T, std::size_t R, class Terms,
          class Factor, class Apply, class... In>
void columns_map(view<T, R> out, Terms&& terms, Factor&& factor, Apply&& apply, const view<In, R>&... in) {
    static_assert((std::is_same_v<std::remove_const_t<In>, T> && ...),
                  "reduce_columns_map: inputs and output must share the element type.");
    constexpr std::size_t N = sizeof...(In);
    const axis_layout<R, D, N + 1> L(out.extents(), {in.strides()..., out.strides()});
    const std::array<const T*, N> src{in.data_handle()...};
    if constexpr (BatchFactor && simd::enabled) {
        if (L.packed && L.rows >= 1 && L.rows <= few_rows) {
            for (index_t b = 0; b < L.items; ++b) {
                std::array<const T*, N> base;
                for (std::size_t v = 0; v < N; ++v) base[v] = src[v] + b * L.item_stride[v];
                T* const o = out.data_handle() + b * out.stride(0);
                constexpr auto seq = std::make_index_sequence<N>{};
                switch (L.rows) {
                case 1: map_few_rows<K, 1, T, N>(terms, factor, apply, base, o, L.row, 1, L.cols, seq); break;
                case 2: map_few_rows<K, 2, T, N>(terms, factor, apply, base, o, L.row, 2, L.cols, seq); break;
                case 3: map_few_rows<K, 3, T, N>(terms, factor, apply, base, o, L.row, 3, L.cols, seq); break;
                case 4: map_few_rows<K, 4, T, N>(terms, factor, apply, base, o, L.row, 4, L.cols, seq); break;
                default: map_few_rows<K, 0, T, N>(terms, factor, apply, base, o, L.row, L.rows, L.cols, seq);
                }
            }
            return;
        }
    }
    alignas(simd::alignment) T fac[tile_max<K, Acc>];
    for_each_column_tile<K, D, Acc>(
        L, L.template tile<K, Acc, T>(true, N), src, terms,
        [&](index_t b, index_t c0, index_t len, const std::array<Acc*, K>& sums,
            const std::array<const T*, N>& base, const index_t (*coloff)[strided_tile]) {
            tile_factors<K, BatchFactor>(factor, sums, len, fac);
            map_tile<T, N>(apply, base, out.data_handle() + b * out.stride(0), L.row, L.rows, L.packed, c0, len,
                           coloff, fac, std::make_index_sequence<N>{});
        });
}

} // namespace reduce_detail

/// Per-column sums. The views are seen as (items = dim 0, rows = dims [1, D), columns = dims
/// [D, R) flattened in C order). For every item b and every tile of columns c0 .. c0+len-1,
/// sums[k][j] = sum over rows of terms(in0[b, row, c0+j], ...)[k] (rows in blocks of
/// reduce_block summed in T, the blocks in double), then sink(b, c0, len, sums) is called
/// with sums a std::array of K pointers to len doubles. terms is generic (batches or scalars).
template <std::size_t K, std::size_t D, class Terms, class Sink, std::size_t R, class T0, class... Tn>
void reduce_columns(Terms&& terms, Sink&& sink, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    reduce_detail::columns<K, D, double>(terms, sink, v0, vn...);
}

/// Per-column sums, a factor per column, and a map: with S the K column sums of
/// reduce_columns (as K doubles), out[b, row, col] = apply(factor(S), in0[b, row, col], ...)
/// where factor(S) returns T. A tile is fully reduced before any of it is written, so `out`
/// may be exactly one of the inputs.
template <std::size_t K, std::size_t D, class T, std::size_t R, class Terms, class Factor, class Apply, class... In>
void reduce_columns_map(view<T, R> out, Terms&& terms, Factor&& factor, Apply&& apply, const view<In, R>&... in) {
    reduce_detail::columns_map<K, D, double, false>(out, terms, factor, apply, in...);
}

/// Per-pixel sums over the channels (dim 1) of (N, C, spatial...) views: reduce_columns with
/// D = 2, the block sums kept in T. sink(b, p0, len, sums) gets K pointers to len T values.
template <std::size_t K, class Terms, class Sink, std::size_t R, class T0, class... Tn>
void reduce_channels(Terms&& terms, Sink&& sink, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    reduce_detail::columns<K, 2, std::remove_const_t<T0>>(terms, sink, v0, vn...);
}

/// For every batch item b and pixel p:
///   S[k] = sum over channels c of terms(in0[b,c,p], in1[b,c,p], ...)[k]   (k < K, in T)
///   out[b,c,p] = apply(factor(S), in0[b,c,p], ...) for every channel c,
/// with factor given S as K batches (or K scalars on strided data and tails). The tile of
/// pixels stays in cache between the sums and the map, so memory is read about once.
/// `out` may be exactly one of the inputs.
template <std::size_t K, class T, std::size_t R, class Terms, class Factor, class Apply, class... In>
void reduce_channels_map(view<T, R> out, Terms&& terms, Factor&& factor, Apply&& apply, const view<In, R>&... in) {
    reduce_detail::columns_map<K, 2, T, true>(out, terms, factor, apply, in...);
}

} // namespace patchbay::kernels
