// demo: the README's first command. Samples the toy UNet (examples/toy_unet.hpp: an exact
// Gaussian-mixture denoiser of procedurally drawn pictures with a small real UNet on top) with
// no patch, with each patch, with the multi-prompt guiders, the CFG++ samplers and a few
// stacks, at several cond_scale values, from the same noise; then the toy DiT
// (examples/toy_dit.hpp, the same kind of exact denoiser under a small MMDiT / Flux-style
// transformer) with the DiT patches (Skip Layer Guidance, NAG). Writes one PNG grid per model
// (rows: patches, columns: cond_scale), one strip per patch for its docs page, and a timing
// table.
//
//   example_demo [--out DIR] [--steps N] [--smoke]
//
// `--out docs/images` regenerates the committed pictures (grid.png, grid_dit.png and
// timings.md are then renamed demo_grid.png, demo_grid_dit.png and demo_timings.md).
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
#include <patchbay/patches/attention/nag.hpp>
#include <patchbay/patches/block/deep_shrink.hpp>
#include <patchbay/patches/block/free_u.hpp>
#include <patchbay/patches/cfg/perp_neg.hpp>
#include <patchbay/patches/cfg/renorm_cfg.hpp>
#include <patchbay/patches/cfg/rescale_cfg.hpp>
#include <patchbay/patches/cfg/video_cfg_guidance.hpp>
#include <patchbay/patches/guider/dual_cfg_guider.hpp>
#include <patchbay/patches/guider/perp_neg_guider.hpp>
#include <patchbay/patches/mask/differential_diffusion.hpp>
#include <patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp>
#include <patchbay/patches/post_cfg/cfg_norm.hpp>
#include <patchbay/patches/post_cfg/cfg_zero_star.hpp>
#include <patchbay/patches/post_cfg/epsilon_scaling.hpp>
#include <patchbay/patches/post_cfg/mahiro.hpp>
#include <patchbay/patches/post_cfg/pag.hpp>
#include <patchbay/patches/post_cfg/sag.hpp>
#include <patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp>
#include <patchbay/patches/post_cfg/temporal_score_rescaling.hpp>
#include <patchbay/patches/pre_cfg/apg.hpp>
#include <patchbay/patches/pre_cfg/fresca.hpp>
#include <patchbay/patches/pre_cfg/latent_apply_operation_cfg.hpp>
#include <patchbay/patches/pre_cfg/tcfg.hpp>
#include <patchbay/sampling/samplers.hpp>
#include <patchbay/sampling/schedules.hpp>

#include "toy_dit.hpp"
#include "toy_unet.hpp"

using namespace patchbay;
using examples::toy_dit;
using examples::toy_unet;

namespace {

/// The run's third prompt (begin_run's extra conditioning), for PerpNeg and the guiders.
enum class third_prompt {
    none,
    empty, ///< the empty prompt: every picture equally likely (the model's negative_prompt())
    other  ///< a prompt for a third picture (DualCFGGuider's middle prompt)
};

template <class Model>
struct row {
    std::string label;
    /// Adds the row's patches; `scale` is the column's cond_scale (the multi-prompt guiders
    /// take their cfg as a parameter, so they are built per column).
    std::function<void(patch_chain<Model>&, const Model&, double scale)> add;
    /// docs/images/patch_<slug>.png: the row named `base` above every row with this slug
    std::string slug = {};
    std::string base = "plain CFG";
    bool inpaint = false; ///< run as an inpainting job (mask + latent image)
    third_prompt extra = third_prompt::none;
    std::string sampler = "euler"; ///< a ComfyUI sampler name (patchbay::sample)
    /// Video CFG: one run whose batch items are the frames (each from the same noise) at the
    /// last column's cond_scale; column c shows frame c.
    bool frames = false;
    /// > 0: the docs strip adds a row "change xN" below this one, (this row - base) * N around
    /// mid grey, for patches whose effect on the toy is a few grey levels
    int change_gain = 0;
};

using unet_row = row<toy_unet>;
using dit_row = row<toy_dit>;

std::vector<unet_row> unet_rows() {
    using chain_t = patch_chain<toy_unet>;
    const auto fu = [](const toy_unet& m) { return m.config().model_channels; };
    const auto none = [](chain_t&, const toy_unet&, double) {};
    return {
        {"plain CFG", none},
        {"RescaleCFG 0.7", [](chain_t& c, const toy_unet&, double) { c.add(rescale_cfg{}); }, "rescale_cfg"},
        {"RenormCFG 1.0", [](chain_t& c, const toy_unet&, double) { c.add(renorm_cfg{}); }, "renorm_cfg"},
        {"CFGNorm 1.0", [](chain_t& c, const toy_unet&, double) { c.add(cfg_norm{}); }, "cfg_norm"},
        {"APG", [](chain_t& c, const toy_unet&, double) { c.add(apg{}); }, "apg"},
        {"TCFG", [](chain_t& c, const toy_unet&, double) { c.add(tcfg{}); }, "tcfg"},
        {"Mahiro", [](chain_t& c, const toy_unet&, double) { c.add(mahiro{}); }, "mahiro"},
        // the default cutoff 20 covers almost all of a 32x32 latent; 4 shows the effect
        {"FreSca cutoff 4", [](chain_t& c, const toy_unet&, double) { c.add(fresca{.scale_low = 1.0, .scale_high = 1.25, .freq_cutoff = 4}); }, "fresca"},
        {"FreeU", [fu](chain_t& c, const toy_unet& m, double) { c.add(free_u{.model_channels = fu(m)}); }, "free_u"},
        {"FreeU_V2", [fu](chain_t& c, const toy_unet& m, double) { c.add(free_u_v2{.model_channels = fu(m)}); }},
        {"SAG 0.5", [](chain_t& c, const toy_unet&, double) { c.add(self_attention_guidance{}); }, "sag"},
        {"PAG 3.0", [](chain_t& c, const toy_unet&, double) { c.add(perturbed_attention_guidance{}); }, "pag"},
        {"FreeU_V2+Rescale", [fu](chain_t& c, const toy_unet& m, double) {
             c.add(free_u_v2{.model_channels = fu(m)});
             c.add(rescale_cfg{});
         }},
        {"APG+CFGNorm", [](chain_t& c, const toy_unet&, double) {
             c.add(apg{});
             c.add(cfg_norm{});
         }},
        {"SAG+PAG", [](chain_t& c, const toy_unet&, double) {
             c.add(self_attention_guidance{});
             c.add(perturbed_attention_guidance{});
         }},
        // inpainting: keep another picture where the mask is low (a left-to-right ramp)
        {"inpaint, plain", none, "", "", true},
        {"inpaint, DiffDiff", [](chain_t& c, const toy_unet&, double) { c.add(differential_diffusion{}); },
         "differential_diffusion", "inpaint, plain", true},

        // the guidance patches of issue 14
        {.label = "CFGZeroStar", .add = [](chain_t& c, const toy_unet&, double) { c.add(cfg_zero_star{}); },
         .slug = "cfg_zero_star", .change_gain = 8},
        // ComfyUI's default 1.005 is invisible at this size; 1.05 shows which way it acts
        {.label = "Eps Scaling 1.05",
         .add = [](chain_t& c, const toy_unet&, double) { c.add(epsilon_scaling{.scaling_factor = 1.05}); },
         .slug = "epsilon_scaling", .change_gain = 8},
        {.label = "TSR k 0.95",
         .add = [](chain_t& c, const toy_unet&, double) { c.add(temporal_score_rescaling{}); },
         .slug = "temporal_score_rescaling", .change_gain = 8},
        {.label = "LatentOp Sharpen",
         .add = [](chain_t& c, const toy_unet&, double) {
             c.add(latent_apply_operation_cfg{latent_operation_sharpen{}});
         },
         .slug = "latent_apply_operation_cfg"},
        {.label = "LatentOp Tonemap",
         .add = [](chain_t& c, const toy_unet&, double) {
             c.add(latent_apply_operation_cfg{latent_operation_tonemap_reinhard{}});
         },
         .slug = "latent_apply_operation_cfg"},
        // Perp-Neg: the negative prompt's guidance only where it is perpendicular to the
        // positive's, measured from the empty prompt (the run's third prompt)
        {.label = "PerpNeg", .add = [](chain_t& c, const toy_unet&, double) { c.add(perp_neg{}); },
         .slug = "perp_neg", .extra = third_prompt::empty},
        {.label = "PerpNegGuider",
         .add = [](chain_t& c, const toy_unet&, double s) { c.add(perp_neg_guider{.cfg = s}); },
         .slug = "perp_neg_guider", .extra = third_prompt::empty},
        // DualCFGGuider (regular): CFG from the negative to a middle prompt (a third picture)
        // at the column's scale, then the positive's difference to the middle at scale 1; at
        // equal scales it is plain CFG
        {.label = "DualCFG, mid pic 2",
         .add = [](chain_t& c, const toy_unet&, double s) {
             c.add(dual_cfg_guider{.cfg_conds = 1.0, .cfg_cond2_negative = s});
         },
         .slug = "dual_cfg_guider", .extra = third_prompt::other},
        // the CFG++ samplers: the same guided prediction, re-noised with the uncond prediction
        {.label = "euler_cfg_pp", .add = none, .slug = "cfg_pp", .sampler = "euler_cfg_pp"},
        {.label = "euler_ancestral", .add = none, .slug = "cfg_pp", .sampler = "euler_ancestral"},
        {.label = "euler_ancestral_cfg_pp", .add = none, .slug = "cfg_pp", .sampler = "euler_ancestral_cfg_pp"},
        // Deep Shrink: the features after input block 1 at half size for the first 35 % of the
        // steps (the toy UNet's input blocks: 0 conv_in, 1 full size, 2 and 3 downsampling)
        {.label = "Deep Shrink blk 1",
         .add = [](chain_t& c, const toy_unet&, double) { c.add(deep_shrink{.block_number = 1}); },
         .slug = "deep_shrink", .change_gain = 8},
        // video CFG: the scale varies over the frames (the batch); frame c in column c
        {.label = "VideoLinear frames",
         .add = [](chain_t& c, const toy_unet&, double) { c.add(video_linear_cfg_guidance{}); },
         .slug = "video_cfg_guidance", .frames = true},
        {.label = "VideoTriangle frames",
         .add = [](chain_t& c, const toy_unet&, double) { c.add(video_triangle_cfg_guidance{}); },
         .slug = "video_cfg_guidance", .frames = true},
    };
}

std::vector<dit_row> dit_rows() {
    using chain_t = patch_chain<toy_dit>;
    return {
        {"plain CFG", [](chain_t&, const toy_dit&, double) {}},
        // SkipLayerGuidanceDiT: an extra cond pass with blocks 7, 8, 9 of both kinds skipped,
        // and the result pushed away from it by scale 3. ComfyUI's default window (1 % to 15 %
        // of the schedule) holds 2 of the 20 steps here, both at high noise, where the exact
        // denoiser dominates: the picture changes by less than one grey level. The window here
        // runs to the end, where the network's detail is made.
        {"SLG DiT 1-100%", [](chain_t& c, const toy_dit&, double) {
             c.add(skip_layer_guidance_dit{.start_percent = 0.01, .end_percent = 1.0});
         },
         "skip_layer_guidance"},
        // SkipLayerGuidanceDiTSimple (defaults): the uncond pass skips blocks 7, 8, 9 at every
        // step, so the guidance also pushes away from what those blocks remove
        {"SLG DiT Simple", [](chain_t& c, const toy_dit&, double) { c.add(skip_layer_guidance_dit_simple{}); },
         "skip_layer_guidance"},
        // NAGuidance (defaults): the negative prompt applied inside every block's attention
        // output, so it acts at cond_scale 1 too (the uncond pass is kept, batched with cond)
        {.label = "NAG", .add = [](chain_t& c, const toy_dit&, double) { c.add(normalized_attention_guidance{}); },
         .slug = "nag", .change_gain = 8},
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
    /// Draws item 0 of a (N, C, H, W) latent in [-1, 1] at (x0, y0), zoomed.
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
    bool write(const std::string& path) const {
        return stbi_write_png(path.c_str(), width, height, 3, px.data(), width * 3) != 0;
    }
};

int text_width(const std::string& s) { return stb_easy_font_width(const_cast<char*>(s.c_str())); }

/// The layout of a grid or strip: a label column, then one zoomed cell per cond_scale.
struct layout {
    int zoom = 3, cell = 0, gap = 6, label_w = 210, header_h = 24;
    int col_x(std::size_t c) const { return label_w + int(c) * (cell + gap); }
    int row_y(std::size_t r) const { return header_h + int(r) * (cell + gap); }
    /// A canvas for `rows` rows with the cond_scale header.
    canvas make(std::size_t rows, const std::vector<double>& scales) const {
        canvas img(col_x(scales.size()), row_y(rows));
        for (std::size_t c = 0; c < scales.size(); ++c) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "cfg %g", scales[c]);
            img.text(buf, col_x(c) + cell / 2 - 24, 6, 2);
        }
        return img;
    }
    void label(canvas& img, std::size_t r, const std::string& s) const { img.text(s, 6, row_y(r) + cell / 2 - 6, 2); }
};

void progress_bar(int done, int total, const std::string& what) {
    const int width = 30, filled = total ? done * width / total : width;
    std::fprintf(stderr, "\r[%.*s%*s] %3d/%d %-24s", filled, "##############################", width - filled, "",
                 done, total, what.c_str());
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
}

struct timing {
    std::string label;
    double ms_per_step = 0;
    double evaluations_per_step = 0; ///< prompts evaluated (a batched call of two prompts counts two)
    double calls_per_step = 0;       ///< network runs (predict and predict_batch calls)
};

/// What every run of a section shares.
template <class Model>
struct job {
    Model& model;
    model_sampling sampling;
    std::vector<double> sigmas, scales;
    tensor<float> noise;                  ///< (1, C, H, W)
    const tensor<float>* latent_image = nullptr; ///< inpainting rows: the picture to keep
    const tensor<float>* mask = nullptr;         ///< ... and where to regenerate (1)
};

/// Runs every row at every scale; returns the cells (rows x scales, each (1, C, H, W)).
template <class Model>
std::vector<std::vector<tensor<float>>> run_rows(const job<Model>& j, const std::vector<row<Model>>& rows,
                                                 std::vector<timing>& timings, int& done, int total) {
    Model& model = j.model;
    // A negative prompt that names another picture, as a user's negative prompt names what to
    // avoid: guidance then pushes away from it, and high scales visibly over-saturate.
    const auto positive = model.prompt(0), negative = model.prompt(1);
    const auto empty = model.negative_prompt(), other = model.prompt(2);
    const std::size_t n = j.scales.size();
    const index_t frame = j.noise.size();
    std::vector<std::vector<tensor<float>>> cells(rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
        const auto& rw = rows[r];
        const auto* extra = rw.extra == third_prompt::empty ? &empty : rw.extra == third_prompt::other ? &other : nullptr;
        double seconds = 0;
        int evaluations = 0, calls = 0, runs = 0;
        for (std::size_t c = 0; c < (rw.frames ? 1 : n); ++c) {
            progress_bar(done, total, rw.label);
            const double scale = rw.frames ? j.scales.back() : j.scales[c];
            patch_chain<Model> chain(model, j.sampling);
            rw.add(chain, model, scale);
            auto run = chain.begin_run(&positive, &negative, extra);
            // frames: the batch is n copies of the noise
            const index_t batch = rw.frames ? index_t(n) : 1;
            tensor<float> noise({batch, j.noise.extent(1), j.noise.extent(2), j.noise.extent(3)}), out(noise.shape());
            for (index_t i = 0; i < noise.size(); ++i) noise[i] = j.noise[i % frame];
            sample_inputs<float, 4> in{noise.as<4>(), {}, j.sigmas, scale};
            if (rw.inpaint) {
                in.latent_image = j.latent_image->template as<4>();
                in.denoise_mask = j.mask->template as<4>();
            }
            model.counts = {};
            const auto t0 = std::chrono::steady_clock::now();
            sample(rw.sampler, chain, run, in, out.as<4>());
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            evaluations += model.counts.total();
            calls += model.counts.calls;
            ++runs;
            for (index_t b = 0; b < batch; ++b) {
                tensor<float> item(j.noise.shape());
                for (index_t i = 0; i < frame; ++i) item[i] = out[b * frame + i];
                cells[r].push_back(std::move(item));
            }
            done += rw.frames ? int(n) : 1;
        }
        const double n_steps = double(j.sigmas.size() - 1) * double(runs);
        timings.push_back({rw.frames ? rw.label + " (batch of " + std::to_string(n) + ")" : rw.label,
                           1e3 * seconds / n_steps, double(evaluations) / n_steps, double(calls) / n_steps});
    }
    return cells;
}

/// The grid of a section, and one strip per slug: its base row above every row with the slug.
template <class Model>
bool write_pictures(const std::vector<row<Model>>& rows, const std::vector<std::vector<tensor<float>>>& cells,
                    const std::vector<double>& scales, const layout& lay, const std::string& grid_path,
                    const std::string& out_dir) {
    canvas img = lay.make(rows.size(), scales);
    for (std::size_t r = 0; r < rows.size(); ++r) {
        lay.label(img, r, rows[r].label);
        for (std::size_t c = 0; c < scales.size(); ++c) img.tile(cells[r][c], lay.col_x(c), lay.row_y(r), lay.zoom);
    }
    if (!img.write(grid_path)) {
        std::fprintf(stderr, "demo: cannot write %s\n", grid_path.c_str());
        return false;
    }
    std::vector<std::string> written;
    for (std::size_t r = 0; r < rows.size(); ++r) {
        const std::string& slug = rows[r].slug;
        if (slug.empty() || std::find(written.begin(), written.end(), slug) != written.end()) continue;
        written.push_back(slug);
        std::vector<std::size_t> strip_rows;
        for (std::size_t k = 0; k < rows.size(); ++k)
            if (rows[k].label == rows[r].base) strip_rows.push_back(k);
        for (std::size_t k = r; k < rows.size(); ++k)
            if (rows[k].slug == slug) strip_rows.push_back(k);
        std::size_t lines = strip_rows.size();
        for (std::size_t k : strip_rows) lines += rows[k].change_gain > 0 ? 1 : 0;
        canvas strip = lay.make(lines, scales);
        std::size_t line = 0;
        for (std::size_t k : strip_rows) {
            lay.label(strip, line, rows[k].label);
            for (std::size_t c = 0; c < scales.size(); ++c) strip.tile(cells[k][c], lay.col_x(c), lay.row_y(line), lay.zoom);
            ++line;
            if (rows[k].change_gain <= 0) continue;
            lay.label(strip, line, "change x" + std::to_string(rows[k].change_gain));
            for (std::size_t c = 0; c < scales.size(); ++c) {
                tensor<float> change(cells[k][c].shape());
                for (index_t i = 0; i < change.size(); ++i)
                    change[i] = float(rows[k].change_gain) * (cells[k][c][i] - cells[strip_rows.front()][c][i]);
                strip.tile(change, lay.col_x(c), lay.row_y(line), lay.zoom);
            }
            ++line;
        }
        const std::string path = out_dir + "/patch_" + slug + ".png";
        if (!strip.write(path)) {
            std::fprintf(stderr, "demo: cannot write %s\n", path.c_str());
            return false;
        }
    }
    return true;
}

void print_table(std::FILE* f, const std::vector<timing>& timings) {
    const double base = timings.front().ms_per_step;
    std::fprintf(f, "| patch | ms per step | prompt evaluations per step | network calls per step | vs plain CFG |\n"
                    "|---|---|---|---|---|\n");
    std::printf("%-36s %8s %12s %10s %9s\n", "patch", "ms/step", "prompts/step", "calls/step", "vs plain");
    for (const auto& t : timings) {
        std::fprintf(f, "| %s | %.3f | %.1f | %.1f | %.2fx |\n", t.label.c_str(), t.ms_per_step,
                     t.evaluations_per_step, t.calls_per_step, t.ms_per_step / base);
        std::printf("%-36s %8.3f %12.1f %10.1f %8.2fx\n", t.label.c_str(), t.ms_per_step, t.evaluations_per_step,
                    t.calls_per_step, t.ms_per_step / base);
    }
}

/// The widest label at scale 2, plus a margin: the label column of a grid.
template <class Model>
int label_width(const std::vector<row<Model>>& rows) {
    int w = 0;
    for (const auto& r : rows) w = std::max(w, 2 * text_width(r.label));
    return std::max(210, w + 16);
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
    const auto urows = unet_rows();
    const auto drows = dit_rows();
    // The UNet path carries the prompt at every noise level (the exact mixture denoiser alone
    // stops responding to the prompt once the posterior has picked its picture), so guidance
    // still acts at low noise and high scales burn, as in real models.
    examples::toy_unet_config unet_config;
    unet_config.residual = 0.8;
    if (const char* r = std::getenv("PATCHBAY_DEMO_RESIDUAL")) unet_config.residual = std::atof(r);
    // The toy DiT as a flow model (SD3 / Flux, where SLG and NAG are used), sampled with SD3's
    // shift-3 schedule. Its latent is a picture, like the UNet's; the network path keeps the
    // toy's weight 0.3 (stronger, its random patch projection covers the picture in texture),
    // so what SLG and NAG change is mostly that texture: the network's detail.
    examples::toy_dit_config dit_config;
    dit_config.kind = examples::toy_kind::flow;
    if (smoke) { // a quick pass over every row: two scales, three steps, small latents
        scales = {1.0, 6.0};
        steps = 3;
        unet_config.height = unet_config.width = 16;
        dit_config.height = dit_config.width = 16;
        out_dir = (std::filesystem::temp_directory_path() / "patchbay_demo_smoke").string();
    }
    std::filesystem::create_directories(out_dir);

    try {
        toy_unet unet(unet_config);
        toy_dit dit(dit_config);
        const auto& uc = unet.config();
        const auto& dc = dit.config();
        const auto make_noise = [](index_t C, index_t H, index_t W) {
            tensor<float> noise({1, C, H, W});
            normal_generator rng(42);
            for (index_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<float>(rng.next());
            return noise;
        };
        // inpainting job: the latent image is picture 3, the mask ramps from 0 (keep) to 1
        const tensor<float> latent_image = unet.picture(3);
        tensor<float> ramp({1, uc.channels, uc.height, uc.width});
        for (index_t c = 0; c < uc.channels; ++c)
            for (index_t y = 0; y < uc.height; ++y)
                for (index_t x = 0; x < uc.width; ++x)
                    ramp.as<4>()(0, c, y, x) = static_cast<float>(double(x) / double(uc.width - 1));
        const auto unet_sampling = model_sampling::discrete("eps");
        const job<toy_unet> unet_job{unet, unet_sampling, simple_schedule(steps, unet_sampling), scales,
                                     make_noise(uc.channels, uc.height, uc.width), &latent_image, &ramp};
        const auto dit_sampling = model_sampling::sd3(3.0);
        const job<toy_dit> dit_job{dit, dit_sampling, simple_schedule(steps, dit_sampling), scales,
                                   make_noise(dc.channels, dc.height, dc.width)};

        const int total = int((urows.size() + drows.size()) * scales.size());
        int done = 0;
        std::vector<timing> unet_timings, dit_timings;
        const auto unet_cells = run_rows(unet_job, urows, unet_timings, done, total);
        const auto dit_cells = run_rows(dit_job, drows, dit_timings, done, total);
        progress_bar(total, total, "done");

        layout lay;
        lay.cell = int(uc.width) * lay.zoom;
        lay.label_w = label_width(urows);
        const std::string png = out_dir + "/grid.png", dit_png = out_dir + "/grid_dit.png",
                          table = out_dir + "/timings.md";
        if (!write_pictures(urows, unet_cells, scales, lay, png, out_dir)) return 1;
        lay.cell = int(dc.width) * lay.zoom;
        lay.label_w = label_width(drows);
        if (!write_pictures(drows, dit_cells, scales, lay, dit_png, out_dir)) return 1;

        std::FILE* f = std::fopen(table.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "demo: cannot write %s\n", table.c_str());
            return 1;
        }
        std::fprintf(f, "The toy UNet (%ldx%ldx%ld latent):\n\n", long(uc.channels), long(uc.height), long(uc.width));
        std::printf("\ntoy UNet\n");
        print_table(f, unet_timings);
        std::fprintf(f, "\nThe toy DiT (%ldx%ldx%ld latent, %d double and %d single blocks):\n\n", long(dc.channels),
                     long(dc.height), long(dc.width), dc.double_blocks, dc.single_blocks);
        std::printf("\ntoy DiT\n");
        print_table(f, dit_timings);
        std::fclose(f);
        std::printf("\ndemo: %d runs of %d steps on a %ldx%ldx%ld toy UNet latent and a %ldx%ldx%ld toy DiT latent\n",
                    total, steps, long(uc.channels), long(uc.height), long(uc.width), long(dc.channels),
                    long(dc.height), long(dc.width));
        std::printf("demo: wrote %s and %s (rows: patches, columns: cond_scale), a strip per patch and %s\n",
                    png.c_str(), dit_png.c_str(), table.c_str());
    } catch (const patchbay::error& e) {
        std::fprintf(stderr, "\ndemo: %s\n", e.what());
        return 1;
    }
    return 0;
}
