// toy_unet: sample the toy UNet (examples/toy_unet.hpp) with plain CFG, SAG, PAG, FreeU and
// SAG + PAG from the same noise, print how far each moves the picture, how many prompt
// evaluations it made and in how many network calls (the guider batches the positive and the
// negative prompt into one call: toy_unet has predict_batch), and write the pictures side by
// side to a PPM file.
//
//   example_toy_unet [--smoke] [--steps N] [--out FILE.ppm]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <patchbay/core/guider.hpp>
#include <patchbay/patches/block/free_u.hpp>
#include <patchbay/patches/post_cfg/pag.hpp>
#include <patchbay/patches/post_cfg/sag.hpp>
#include <patchbay/sampling/samplers.hpp>

#include "toy_unet.hpp"

using namespace patchbay;
using examples::toy_unet;

namespace {

/// ComfyUI's "simple" schedule for the model's table.
std::vector<double> simple_sigmas(const model_sampling& ms, int steps) {
    const auto table = ms.sigmas();
    std::vector<double> s;
    const double stride = double(table.size()) / steps;
    for (int k = 0; k < steps; ++k)
        s.push_back(double(table[table.size() - 1 - static_cast<std::size_t>(k * stride)]));
    s.push_back(0.0);
    return s;
}

struct result {
    const char* name;
    tensor<float> picture;
    int evaluations; ///< prompts evaluated
    int calls;       ///< network calls (a batched call evaluates several prompts)
};

template <class... P>
result run(const char* name, int steps, const tensor<float>& noise, index_t prompt, P... patches) {
    toy_unet model;
    guider<toy_unet, P...> g(model, model_sampling::discrete("eps"), patches...);
    const auto pos = model.prompt(prompt), neg = model.negative_prompt();
    auto state = g.begin_run(&pos, &neg);
    const auto sigmas = simple_sigmas(g.sampling(), steps);
    tensor<float> out(noise.shape());
    sample_euler(g, state, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 5.0}, out.as<4>());
    return {name, std::move(out), model.counts.total(), model.counts.calls};
}

void write_ppm(const std::string& path, const std::vector<result>& rs, index_t zoom) {
    const auto& shape = rs.front().picture.shape();
    const index_t C = shape[1], H = shape[2], W = shape[3], gap = 4;
    const index_t width = index_t(rs.size()) * (W * zoom + gap), height = H * zoom;
    std::vector<unsigned char> px(static_cast<std::size_t>(width * height * 3), 255);
    for (std::size_t r = 0; r < rs.size(); ++r) {
        const auto v = rs[r].picture.as<4>();
        for (index_t y = 0; y < height; ++y)
            for (index_t x = 0; x < W * zoom; ++x)
                for (index_t c = 0; c < 3; ++c) {
                    const float val = v(0, std::min(c, C - 1), y / zoom, x / zoom);
                    const double u = std::clamp((double(val) + 1.0) * 127.5, 0.0, 255.0);
                    px[std::size_t((y * width + index_t(r) * (W * zoom + gap) + x) * 3 + c)] =
                        static_cast<unsigned char>(u);
                }
    }
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return;
    }
    std::fprintf(f, "P6\n%ld %ld\n255\n", long(width), long(height));
    std::fwrite(px.data(), 1, px.size(), f);
    std::fclose(f);
    std::printf("wrote %s (left to right:", path.c_str());
    for (const auto& r : rs) std::printf(" %s", r.name);
    std::printf(")\n");
}

} // namespace

int main(int argc, char** argv) {
    bool smoke = false;
    int steps = 20;
    std::string out_path;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--smoke")) smoke = true;
        else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
    }
    if (smoke) steps = 3;
    try {
        const toy_unet probe;
        const auto& c = probe.config();
        tensor<float> noise({1, c.channels, c.height, c.width});
        normal_generator rng(42);
        rng.fill(noise.as<4>());
        const index_t prompt = 2;
        const std::vector<result> rs{
            run("cfg", steps, noise, prompt),
            run("sag", steps, noise, prompt, self_attention_guidance{1.0, 2.0}),
            run("pag", steps, noise, prompt, perturbed_attention_guidance{3.0}),
            run("freeu", steps, noise, prompt, free_u{1.3, 1.4, 0.9, 0.2, c.model_channels}),
            run("sag+pag", steps, noise, prompt, self_attention_guidance{1.0, 2.0},
                perturbed_attention_guidance{3.0}),
        };
        const auto target = probe.picture(prompt);
        for (const auto& r : rs) {
            double d_target = 0, d_cfg = 0;
            for (index_t i = 0; i < target.size(); ++i) {
                d_target += std::pow(double(r.picture[i] - target[i]), 2);
                d_cfg += std::pow(double(r.picture[i] - rs.front().picture[i]), 2);
            }
            std::printf("%-8s prompt evaluations %3d in %3d calls  rms to picture %d: %.4f  rms change vs cfg: %.4f\n",
                        r.name, r.evaluations, r.calls, int(prompt), std::sqrt(d_target / double(target.size())),
                        std::sqrt(d_cfg / double(target.size())));
        }
        if (!out_path.empty()) write_ppm(out_path, rs, 8);
    } catch (const patchbay::error& e) {
        std::fprintf(stderr, "toy_unet: %s\n", e.what());
        return 1;
    }
    return 0;
}
