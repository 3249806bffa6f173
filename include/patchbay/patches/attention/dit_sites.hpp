// patchbay: how a DiT names its self-attention sites for attention-output hooks (NAG).
//
// attention_site names UNet sites by stage (input / middle / output), block and transformer.
// A DiT's sites use one more stage value, `dit::stage`, with block 0 for double (MMDiT joint)
// blocks and 1 for single blocks, and the block's index as the transformer index, so one
// pattern (transformer -1) matches every block of a kind. The site reports the image token
// grid (rows x cols): a DiT block's tokens are its text tokens followed by rows*cols image
// tokens (Flux's order), so the image tokens are the last rows*cols (ComfyUI's img_slice).
#pragma once

#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"

namespace patchbay::dit {

/// The attention_site stage of every DiT site (after the UNet's input, middle, output).
inline constexpr unet_stage stage = static_cast<unet_stage>(3);

/// attention_site::block of a DiT block kind: 0 double blocks, 1 single blocks.
constexpr int block_of(dit_block_site::kind k) noexcept {
    return k == dit_block_site::kind::double_block ? 0 : 1;
}

/// The self-attention of one DiT block, with its image token grid (rows * cols tokens, the
/// last of the block's tokens).
constexpr attention_site attention(dit_block_site block, index_t rows, index_t cols) noexcept {
    return attention_site{stage, block_of(block.type), block.index, rows, cols};
}

/// A pattern matching the self-attention of every block of one kind.
constexpr attention_site every(dit_block_site::kind k) noexcept {
    return attention_site{stage, block_of(k), -1, 0, 0};
}

/// Is this a DiT site (its tokens are text then image)?
constexpr bool is_dit(const attention_site& s) noexcept { return s.stage == stage; }

/// Image tokens of a DiT site's output of `tokens` tokens: the last rows*cols.
constexpr index_t image_tokens(const attention_site& s) noexcept { return s.rows * s.cols; }

} // namespace patchbay::dit
