// demo: the README's first command. Samples the toy UNet (examples/toy_unet.hpp: an exact
// Gaussian-mixture denoiser of procedurally drawn pictures with a small real UNet on top) with
// no patch, with each patch and with a few stacks, at several cond_scale values, from the same
// noise. Writes a PNG grid (rows: patches, columns: cond_scale) and a timing table.
//
//   example_demo [--out DIR] [--steps N] [--smoke]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <stb/stb_easy_font.h>
#include <stb/stb_image_write.h>

#include <patchbay/core/patch_chain.hpp>
#include <patchbay/patchbay.hpp>
#include <patchbay/patches/block/free_u.hpp>
#include <patchbay/patches/cfg/renorm_cfg.hpp>
#include <patchbay/patches/cfg/rescale_cfg.hpp>
#include <patchbay/patches/mask/differential_diffusion.hpp>
#include <patchbay/patches/post_cfg/cfg_norm.hpp>
#include <patchbay/patches/post_cfg/mahiro.hpp>
#include <patchbay/patches/post_cfg/pag.hpp>
#include <patchbay/patches/post_cfg/sag.hpp>
#include <patchbay/patches/pre_cfg/apg.hpp>
#include <patchbay/patches/pre_cfg/fresca.hpp>
#include <patchbay/patches/pre_cfg/tcfg.hpp>
#include <patchbay/sampling/samplers.hpp>
#include <patchbay/sampling/schedules.hpp>

#include "toy_unet.hpp"

using namespace patchbay;
using examples::toy_unet;
using chain_t = patch_chain<toy_unet>;

namespace {

struct row {
    std::string label;
    std::function<void(chain_t&, const toy_unet&)> add;
    std::string slug = {};  ///< docs/images/patch_<slug>.png when set
    bool inpaint = false;   ///< run as an inpainting job (mask + latent image)
};

std::vector<row> demo_rows() {
    const auto fu = [](const toy_unet& m) { return m.config().model_channels; };
    return {
        {"plain CFG", [](chain_t&, const toy_unet&) {}},
        {"RescaleCFG 0.7", [](chain_t& c, const toy_unet&) { c.add(rescale_cfg{}); }, "rescale_cfg"},
        {"RenormCFG 1.0", [](chain_t& c, const toy_unet&) { c.add(renorm_cfg{}); }, "renorm_cfg"},
        {"CFGNorm 1.0", [](chain_t& c, const toy_unet&) { c.add(cfg_norm{}); }, "cfg_norm"},
        {"APG", [](chain_t& c, const toy_unet&) { c.add(apg{}); }, "apg"},
        {"TCFG", [](chain_t& c, const toy_unet&) { c.add(tcfg{}); }, "tcfg"},
        {"Mahiro", [](chain_t& c, const toy_unet&) { c.add(mahiro{}); }, "mahiro"},
        // the default cutoff 20 covers almost all of a 32x32 latent; 4 shows the effect
        {"FreSca cutoff 4", [](chain_t& c, const toy_unet&) { c.add(fresca{.scale_low = 1.0, .scale_high = 1.25, .freq_cutoff = 4}); }, "fresca"},
        {"FreeU", [fu](chain_t& c, const toy_unet& m) { c.add(free_u{.model_channels = fu(m)}); }, "free_u"},
        {"FreeU_V2", [fu](chain_t& c, const toy_unet& m) { c.add(free_u_v2{.model_channels = fu(m)}); }},
        {"SAG 0.5", [](chain_t& c, const toy_unet&) { c.add(self_attention_guidance{}); }, "sag"},
        {"PAG 3.0", [](chain_t& c, const toy_unet&) { c.add(perturbed_attention_guidance{}); }, "pag"},
        {"FreeU_V2+Rescale", [fu](chain_t& c, const toy_unet& m) {
             c.add(free_u_v2{.model_channels = fu(m)});
             c.add(rescale_cfg{});
         }},
        {"APG+CFGNorm", [](chain_t& c, const toy_unet&) {
             c.add(apg{});
             c.add(cfg_norm{});
         }},
        {"SAG+PAG", [](chain_t& c, const toy_unet&) {
             c.add(self_attention_guidance{});
             c.add(perturbed_attention_guidance{});
         }},
        // inpainting: keep another picture where the mask is low (a left-to-right ramp)
        {"inpaint, plain", [](chain_t&, const toy_unet&) {}, "", true},
        {"inpaint, DiffDiff", [](chain_t& c, const toy_unet&) { c.add(differential_diffusion{}); },
         "differential_diffusion", true},
    };
}

/// An RGB canvas with nearest-neighbour tiles and stb_easy_font labels.
struct canvas {
    int width, height;
    std::vector<unsigned char> px;
    canvas(int w, int h) : width(w), height(h), px(static_cast<std::size_t>(w * h * 3), 250) {}

    void put(int x, int y, unsigned char r, unsigned char g, unsigned char b) {
        if (x < 0 || y < 0 || x >= width || y >= height) return;
        auto* p = &px[static_cast<std::size_t>((y * width + x) * 3)];
        p[0] = r, p[1] = g, p[2] = b;
    }
    /// Draws a (1, 3, H, W) latent in [-1, 1] at (x0, y0), zoomed.
    void tile(const tensor<float>& img, int x0, int y0, int zoom) {
        const auto v = img.as<4>();
        const index_t C = v.extent(1), H = v.extent(2), W = v.extent(3);
        for (index_t y = 0; y < H * zoom; ++y)
            for (index_t x = 0; x < W * zoom; ++x) {
                unsigned char rgb[3];
                for (index_t c = 0; c < 3; ++c) {
                    const double val = v(0, std::min(c, C - 1), y / zoom, x / zoom);
                    rgb[c] = static_cast<unsigned char>(std::clamp((val + 1.0) * 127.5, 0.0, 255.0));
                }
                put(x0 + int(x), y0 + int(y), rgb[0], rgb[1], rgb[2]);
            }
    }
    /// Text at (x0, y0), scale pixels per font unit (stb_easy_font emits axis-aligned quads).
    void text(const std::string& s, int x0, int y0, int scale) {
        std::vector<char> buf(s.size() * 300 + 64);
        const int quads = stb_easy_font_print(0, 0, const_cast<char*>(s.c_str()), nullptr, buf.data(),
                                              static_cast<int>(buf.size()));
        const float* q = reinterpret_cast<const float*>(buf.data());
        for (int i = 0; i < quads; ++i) {
            const float* v = q + i * 16; // 4 vertices of (x, y, z, color)
            const int xa = int(v[0]) * scale, ya = int(v[1]) * scale;
            const int xb = int(v[8]) * scale, yb = int(v[9]) * scale;
            for (int y = ya; y < yb; ++y)
                for (int x = xa; x < xb; ++x) put(x0 + x, y0 + y, 20, 20, 20);
        }
    }
};

void progress_bar(int done, int total, const std::string& what) {
    const int width = 30, filled = total ? done * width / total : width;
    std::fprintf(stderr, "\r[%.*s%*s] %3d/%d %-24s", filled, "##############################", width - filled, "",
                 done, total, what.c_str());
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
}

} // namespace

int main(int argc, char** argv) {
    std::string out_dir = "out/demo";
    int steps = 20;
    bool smoke = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--out" && i + 1 < argc) out_dir = argv[++i];
        else if (a == "--steps" && i + 1 < argc) steps = std::max(1, std::atoi(argv[++i]));
        else if (a == "--smoke") smoke = true;
        else {
            std::fprintf(stderr, "usage: %s [--out DIR] [--steps N] [--smoke]\n", argv[0]);
            return 2;
        }
    }
    std::vector<double> scales{1.0, 3.0, 6.0, 10.0, 16.0};
    auto rows = demo_rows();
    if (smoke) { // a quick pass over every row, two scales, three steps
        scales = {1.0, 6.0};
        steps = 3;
        out_dir = (std::filesystem::temp_directory_path() / "patchbay_demo_smoke").string();
    }
    std::filesystem::create_directories(out_dir);

    // The UNet path carries the prompt at every noise level (the exact mixture denoiser alone
    // stops responding to the prompt once the posterior has picked its picture), so guidance
    // still acts at low noise and high scales burn, as in real models.
    examples::toy_unet_config model_config;
    model_config.residual = 0.8;
    if (const char* r = std::getenv("PATCHBAY_DEMO_RESIDUAL")) model_config.residual = std::atof(r);
    toy_unet model(model_config);
    const auto sampling = model_sampling::discrete("eps");
    const auto sigmas = simple_schedule(steps, sampling);
    // A negative prompt that names another picture, as a user's negative prompt names what to
    // avoid: guidance then pushes away from it, and high scales visibly over-saturate.
    const auto positive = model.prompt(0), negative = model.prompt(1);
    const auto& cfg = model.config();
    tensor<float> noise({1, cfg.channels, cfg.height, cfg.width});
    normal_generator rng(42);
    for (index_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<float>(rng.next());

    // inpainting job: the latent image is picture 3, the mask ramps from 0 (keep) to 1
    const tensor<float> latent_image = model.picture(3);
    tensor<float> ramp(noise.shape());
    for (index_t c = 0; c < cfg.channels; ++c)
        for (index_t y = 0; y < cfg.height; ++y)
            for (index_t x = 0; x < cfg.width; ++x)
                ramp.as<4>()(0, c, y, x) = static_cast<float>(double(x) / double(cfg.width - 1));
    std::vector<std::vector<tensor<float>>> cells(rows.size());

    const int zoom = 3, cell = int(cfg.width) * zoom, gap = 6, label_w = 210, header_h = 24;
    canvas img(label_w + int(scales.size()) * (cell + gap), header_h + int(rows.size()) * (cell + gap));
    for (std::size_t c = 0; c < scales.size(); ++c) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "cfg %g", scales[c]);
        img.text(buf, label_w + int(c) * (cell + gap) + cell / 2 - 24, 6, 2);
    }

    struct timing {
        std::string label;
        double ms_per_step = 0;
        double calls_per_step = 0;
    };
    std::vector<timing> timings;
    const int total = int(rows.size() * scales.size());
    int done = 0;
    for (std::size_t r = 0; r < rows.size(); ++r) {
        chain_t chain(model, sampling);
        rows[r].add(chain, model);
        img.text(rows[r].label, 6, header_h + int(r) * (cell + gap) + cell / 2 - 6, 2);
        double seconds = 0;
        int calls = 0;
        for (std::size_t c = 0; c < scales.size(); ++c) {
            progress_bar(done, total, rows[r].label);
            auto run = chain.begin_run(&positive, &negative);
            tensor<float> out(noise.shape());
            model.counts = {};
            const auto t0 = std::chrono::steady_clock::now();
            sample_inputs<float, 4> in{noise.as<4>(), {}, sigmas, scales[c]};
            if (rows[r].inpaint) {
                in.latent_image = latent_image.as<4>();
                in.denoise_mask = ramp.as<4>();
            }
            sample_euler(chain, run, in, out.as<4>());
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            calls += model.counts.total();
            img.tile(out, label_w + int(c) * (cell + gap), header_h + int(r) * (cell + gap), zoom);
            cells[r].push_back(std::move(out));
            ++done;
        }
        const double n_steps = double(steps) * double(scales.size());
        timings.push_back({rows[r].label, 1e3 * seconds / n_steps, double(calls) / n_steps});
    }
    progress_bar(total, total, "done");

    const std::string png = out_dir + "/grid.png", table = out_dir + "/timings.md";
    if (!stbi_write_png(png.c_str(), img.width, img.height, 3, img.px.data(), img.width * 3)) {
        std::fprintf(stderr, "demo: cannot write %s\n", png.c_str());
        return 1;
    }
    // One strip per patch for its docs page: plain CFG (or plain inpainting) above the patch.
    for (std::size_t r = 1; r < rows.size(); ++r) {
        if (rows[r].slug.empty()) continue;
        const std::size_t base_row = rows[r].inpaint ? r - 1 : 0;
        canvas strip(label_w + int(scales.size()) * (cell + gap), header_h + 2 * (cell + gap));
        for (std::size_t c = 0; c < scales.size(); ++c) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "cfg %g", scales[c]);
            strip.text(buf, label_w + int(c) * (cell + gap) + cell / 2 - 24, 6, 2);
            strip.tile(cells[base_row][c], label_w + int(c) * (cell + gap), header_h, zoom);
            strip.tile(cells[r][c], label_w + int(c) * (cell + gap), header_h + cell + gap, zoom);
        }
        strip.text(rows[base_row].label, 6, header_h + cell / 2 - 6, 2);
        strip.text(rows[r].label, 6, header_h + cell + gap + cell / 2 - 6, 2);
        const std::string path = out_dir + "/patch_" + rows[r].slug + ".png";
        stbi_write_png(path.c_str(), strip.width, strip.height, 3, strip.px.data(), strip.width * 3);
    }

    std::FILE* f = std::fopen(table.c_str(), "w");
    if (!f) {
        std::fprintf(stderr, "demo: cannot write %s\n", table.c_str());
        return 1;
    }
    const double base = timings.front().ms_per_step;
    std::fprintf(f, "| patch | ms per step | model calls per step | vs plain CFG |\n|---|---|---|---|\n");
    std::printf("\n%-22s %12s %12s %10s\n", "patch", "ms/step", "calls/step", "vs plain");
    for (const auto& t : timings) {
        std::fprintf(f, "| %s | %.3f | %.1f | %.2fx |\n", t.label.c_str(), t.ms_per_step, t.calls_per_step,
                     t.ms_per_step / base);
        std::printf("%-22s %12.3f %12.1f %9.2fx\n", t.label.c_str(), t.ms_per_step, t.calls_per_step,
                    t.ms_per_step / base);
    }
    std::fclose(f);
    std::printf("\ndemo: %d runs of %d Euler steps on a %ldx%ldx%ld toy latent\n", total, steps, long(cfg.channels),
                long(cfg.height), long(cfg.width));
    std::printf("demo: wrote %s (rows: patches, columns: cond_scale) and %s\n", png.c_str(), table.c_str());
    return 0;
}
