// model_sampling_plot: sigma against step for every model sampling object at its ComfyUI node
// defaults, under ComfyUI's "simple" and "normal" schedulers. Writes the PNGs of
// docs/patches/model_sampling.md (docs/images/model_sampling_<object>.png) and prints the
// schedules as a table.
//
//   example_model_sampling_plot [OUT_DIR | --smoke]   (OUT_DIR defaults to docs/images; 20 steps)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <patchbay/sampling/model_sampling.hpp>
#include <patchbay/sampling/schedules.hpp>

// stb (Debian's libstb-dev) as header-only implementations in this one translation unit.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>

using namespace patchbay;

namespace {

struct object {
    std::string slug, title;
    model_sampling ms;
};

std::vector<object> objects() {
    return {
        {"discrete", "ModelSamplingDiscrete (eps)", model_sampling::discrete()},
        {"sd3", "ModelSamplingSD3 (shift 3)", model_sampling::sd3()},
        {"aura_flow", "ModelSamplingAuraFlow (shift 1.73)", model_sampling::aura_flow()},
        {"flux", "ModelSamplingFlux (1024x1024: mu 1.15)", model_sampling::flux()},
        {"ltxv", "ModelSamplingLTXV (no latent: mu 2.05)", model_sampling::ltxv()},
        {"continuous_edm", "ModelSamplingContinuousEDM (0.002 .. 120)", model_sampling::continuous_edm()},
        {"continuous_v", "ModelSamplingContinuousV (0.03 .. 500)", model_sampling::continuous_v()},
        {"stable_cascade", "ModelSamplingStableCascade (shift 2)", model_sampling::stable_cascade()},
    };
}

struct rgb {
    unsigned char r, g, b;
};

/// An RGB canvas with lines, dots and stb_easy_font text.
struct canvas {
    int width, height;
    std::vector<unsigned char> px;
    canvas(int w, int h) : width(w), height(h), px(static_cast<std::size_t>(w * h * 3), 255) {}

    void put(int x, int y, rgb c) {
        if (x < 0 || y < 0 || x >= width || y >= height) return;
        auto* p = &px[static_cast<std::size_t>((y * width + x) * 3)];
        p[0] = c.r, p[1] = c.g, p[2] = c.b;
    }
    /// Fills [x0, x1) x [y0, y1).
    void fill(int x0, int y0, int x1, int y1, rgb c) {
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x) put(x, y, c);
    }
    void dot(double x, double y, int radius, rgb c) {
        const int cx = int(std::lround(x)), cy = int(std::lround(y));
        fill(cx - radius, cy - radius, cx + radius + 1, cy + radius + 1, c);
    }
    void line(double x0, double y0, double x1, double y1, rgb c, int radius = 0) {
        const int n = std::max(1, int(std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0)))));
        for (int i = 0; i <= n; ++i) {
            const double t = double(i) / n;
            dot(x0 + t * (x1 - x0), y0 + t * (y1 - y0), radius, c);
        }
    }
    /// Text with its top-left corner at (x0, y0); `scale` pixels per font unit. stb_easy_font
    /// emits each glyph stroke as an axis-aligned quad of four vertices.
    void text(const std::string& s, int x0, int y0, int scale = 1, rgb c = {30, 30, 30}) {
        struct vertex {
            float x, y, z;
            unsigned char rgba[4];
        };
        std::vector<vertex> quads(s.size() * 80 + 16);
        const int n = stb_easy_font_print(0, 0, const_cast<char*>(s.c_str()), nullptr, quads.data(),
                                          static_cast<int>(quads.size() * sizeof(vertex)));
        for (int q = 0; q < n; ++q) {
            const vertex& a = quads[std::size_t(4 * q)];
            const vertex& b = quads[std::size_t(4 * q + 2)]; // the opposite corner
            fill(x0 + int(a.x) * scale, y0 + int(a.y) * scale, x0 + int(b.x) * scale, y0 + int(b.y) * scale, c);
        }
    }
    int text_width(const std::string& s) const { return stb_easy_font_width(const_cast<char*>(s.c_str())); }
};

std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

/// Sigma against step for two schedules; log axis unless every sigma is within [0, 1].
canvas plot(const object& o, int steps) {
    const std::vector<double> simple = simple_schedule(steps, o.ms);
    const std::vector<double> normal = normal_schedule(steps, o.ms);
    const bool flow_range = o.ms.sigma_max() <= 1.0f;
    canvas c(600, 380);
    const int left = 70, right = 20, top = 44, bottom = 52;
    const double pw = c.width - left - right, ph = c.height - top - bottom;
    double lo = 0.0, hi = 1.0;
    if (!flow_range) { // decades around the nonzero sigmas
        double mn = 1e30, mx = 0.0;
        for (const auto* s : {&simple, &normal})
            for (double v : *s)
                if (v > 0.0) mn = std::min(mn, v), mx = std::max(mx, v);
        lo = std::floor(std::log10(mn));
        hi = std::ceil(std::log10(mx));
    }
    auto y_of = [&](double sigma) {
        const double v = flow_range ? sigma : std::log10(sigma);
        return top + ph * (1.0 - (v - lo) / (hi - lo));
    };
    auto x_of = [&](double step) { return left + pw * step / steps; };
    const rgb grid{225, 225, 225}, axis{60, 60, 60};
    // grid and tick labels
    if (flow_range) {
        for (int k = 0; k <= 4; ++k) {
            const double v = k / 4.0;
            c.line(left, y_of(v), left + pw, y_of(v), grid);
            c.text(fmt(v), left - 8 - c.text_width(fmt(v)), int(y_of(v)) - 3);
        }
    } else {
        for (double d = lo; d <= hi + 1e-9; d += 1.0) {
            const double v = std::pow(10.0, d);
            c.line(left, y_of(v), left + pw, y_of(v), grid);
            c.text(fmt(v), left - 8 - c.text_width(fmt(v)), int(y_of(v)) - 3);
        }
    }
    int tick = 1; // 1, 2, 5, 10, 20, ... so that at most about 8 ticks fit
    for (int m = 1; steps / tick > 8; m *= 10)
        for (int f : {1, 2, 5})
            if (steps / tick > 8) tick = f * m;
    for (int k = 0; k <= steps; k += tick) {
        c.line(x_of(k), top, x_of(k), top + ph, grid);
        c.text(std::to_string(k), int(x_of(k)) - c.text_width(std::to_string(k)) / 2, int(top + ph) + 8);
    }
    c.line(left, top, left, top + ph, axis);
    c.line(left, top + ph, left + pw, top + ph, axis);
    // curves: simple (blue), normal (orange); zeros are off a log axis
    const struct {
        const std::vector<double>* s;
        rgb color;
        const char* name;
    } curves[] = {{&normal, {230, 120, 20}, "normal"}, {&simple, {30, 90, 200}, "simple"}};
    for (const auto& cv : curves) {
        const auto& s = *cv.s;
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (!flow_range && s[i] <= 0.0) continue;
            if (i + 1 < s.size() && (flow_range || s[i + 1] > 0.0))
                c.line(x_of(double(i)), y_of(s[i]), x_of(double(i + 1)), y_of(s[i + 1]), cv.color, 1);
            c.dot(x_of(double(i)), y_of(s[i]), 2, cv.color);
        }
    }
    // title, axis names, legend
    c.text(o.title, left, 12, 2);
    c.text("step", int(left + pw / 2) - 8, c.height - 22);
    c.text(flow_range ? "sigma" : "sigma (log)", 6, top - 16);
    int lx = int(left + pw) - 120;
    for (const auto& cv : curves) {
        c.line(lx, top + 12, lx + 18, top + 12, cv.color, 1);
        c.text(cv.name, lx + 24, top + 9);
        lx += 64;
    }
    return c;
}

} // namespace

int main(int argc, char** argv) {
    const std::string arg = argc > 1 ? argv[1] : "docs/images";
    if (argc > 2 || (arg.rfind("-", 0) == 0 && arg != "--smoke")) {
        std::fprintf(stderr, "usage: %s [OUT_DIR | --smoke]\n", argv[0]);
        return 2;
    }
    const std::string out_dir =
        arg == "--smoke" ? (std::filesystem::temp_directory_path() / "patchbay_model_sampling_plot").string() : arg;
    constexpr int steps = 20;
    std::filesystem::create_directories(out_dir);
    std::printf("| object | sigma_max | sigma_min | simple schedule, %d steps (first 4) |\n| --- | --- | --- | --- |\n", steps);
    for (const auto& o : objects()) {
        const canvas c = plot(o, steps);
        const std::string path = out_dir + "/model_sampling_" + o.slug + ".png";
        if (!stbi_write_png(path.c_str(), c.width, c.height, 3, c.px.data(), c.width * 3)) {
            std::fprintf(stderr, "model_sampling_plot: cannot write %s\n", path.c_str());
            return 1;
        }
        const auto s = simple_schedule(steps, o.ms);
        std::printf("| %s | %.6g | %.6g | %.5g, %.5g, %.5g, %.5g |\n", o.ms.class_type(), double(o.ms.sigma_max()),
                    double(o.ms.sigma_min()), s[0], s[std::min<std::size_t>(1, s.size() - 1)],
                    s[std::min<std::size_t>(2, s.size() - 1)], s[std::min<std::size_t>(3, s.size() - 1)]);
    }
    std::printf("model_sampling_plot: wrote %s/model_sampling_*.png\n", out_dir.c_str());
    return 0;
}
