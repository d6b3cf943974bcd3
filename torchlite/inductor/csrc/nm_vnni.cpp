// Decode-shaped 2:4 sparse linear over int8 values (torchlite.sparse.nm storage) with AVX512-VNNI,
// without the row scale (the caller's epilogue applies it).
// torchlite/inductor/sparse.py prepends prefetch.h, activation_parts.h and the #defines: M_ROWS, N_OUT, K_IN, KP,
// GROUPS (K_IN / 4, a multiple of 16), CODE_BYTES (per row), PARTS, STATIC_X_SCALE.
//
// Per weight row: int8 values in blocks of 16 groups, slot-major (16 slot-0 values, then 16 slot-1),
// and a 4-bit code per group: slot 0 takes input 0 of its group if bit 3, else 1 if bit 2, else 2;
// slot 1 takes input 3 if bit 1, else 2 if bit 2, else 1. A step is 32 groups, whose 64 value bytes
// are [slot 0 of groups 0-15 | slot 1 of 0-15 | slot 0 of 16-31 | slot 1 of 16-31] and whose 16 code
// bytes hold groups 0-15 in their low nibbles and 16-31 in their high ones (torchlite.sparse.nm):
// broadcast to the four lanes, each lane tests its own bits. The activations
// are quantized into PARTS int8 parts (activation_parts.h) and laid out per step in that order as three
// candidate vectors, NEAR (input 0 | input 3), MID (1 | 2) and FAR (2 | 1), plus 128 (vpdpbusd takes
// them unsigned): two masked byte blends driven by the code bits pick each value's activation, and
// vpdpbusd multiplies 64 pairs. Σ (q + 128)·v = Σ q·v + 128·Σ v, with Σ v from one more vpdpbusd
// against ones; out[n, m] = Σ_p s_p·(Σ u·v − 128·Σ v).
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")
#include <cstring>

constexpr int64_t STEPS = (GROUPS + 31) / 32;
static_assert(GROUPS % 16 == 0 && GROUPS * 4 == K_IN, "2:4 storage in whole blocks of 16 groups");
static_assert(KP >= STEPS * 128, "activations are padded to whole steps");
static_assert(K_IN <= 65536, "int32 accumulators could overflow");

// Per-call scratch (heap, so concurrent calls of one kernel do not share it).
struct Scratch {
    alignas(64) uint8_t candidates[PARTS][M_ROWS][STEPS][3][64];  // NEAR, MID, FAR per step
    alignas(64) int8_t natural[PARTS][KP];                        // one row's parts in input order
    alignas(64) uint8_t planes[4][STEPS * 32];                    // input r of every group, + 128
    alignas(64) float rest[KP];
    float scale[M_ROWS][PARTS];
};

static void lay_out_activations(const float* x, Scratch& a) {
    // the input each candidate takes for slot 0 and slot 1 of a group
    constexpr int INPUT[3][2] = {{0, 3}, {1, 2}, {2, 1}};
    for (int64_t m = 0; m < M_ROWS; ++m) {
        quantize_parts(x + m * K_IN, nullptr, a.rest, a.natural, a.scale[m]);
        for (int p = 0; p < PARTS; ++p) {
            for (int64_t g = 0; g < STEPS * 32; ++g)
                for (int r = 0; r < 4; ++r) a.planes[r][g] = (uint8_t)((g < GROUPS ? a.natural[p][4 * g + r] : 0) + 128);
            // lane l of a step: groups 16 (l / 2) .. + 15 of slot l % 2
            for (int64_t s = 0; s < STEPS; ++s)
                for (int c = 0; c < 3; ++c)
                    for (int l = 0; l < 4; ++l)
                        std::memcpy(a.candidates[p][m][s][c] + 16 * l, a.planes[INPUT[c][l % 2]] + s * 32 + 16 * (l / 2), 16);
        }
    }
}

extern "C" void kernel(const float* x, const int8_t* values, const uint8_t* codes, float* out) {
    std::unique_ptr<Scratch> scratch(new Scratch);
    const Scratch& a = *scratch;
    lay_out_activations(x, *scratch);
    // per lane (slot 0 / 1 of groups 0-15, of groups 16-31): the outer bit (3 or 1 of the group's
    // nibble) and the middle one (2)
    const __m512i outer_bit = _mm512_set_epi64(0x2020202020202020, 0x2020202020202020, 0x8080808080808080,
                                               0x8080808080808080, 0x0202020202020202, 0x0202020202020202,
                                               0x0808080808080808, 0x0808080808080808);
    const __m512i middle_bit = _mm512_set_epi64(0x4040404040404040, 0x4040404040404040, 0x4040404040404040,
                                                0x4040404040404040, 0x0404040404040404, 0x0404040404040404,
                                                0x0404040404040404, 0x0404040404040404);
    const __m512i ones = _mm512_set1_epi8(1);
    #pragma omp parallel
    {
        const ThreadRows rows;
        for (int64_t r = 0; r < rows.count; ++r) {
            const int64_t n = rows[r];
            const int8_t* row = values + n * 2 * GROUPS;
            const uint8_t* code_row = codes + n * CODE_BYTES;
            int32_t value_sum = 0;
            for (int64_t m = 0; m < M_ROWS; ++m) {
                __m512i acc[PARTS], vsum = _mm512_setzero_si512();
                for (int p = 0; p < PARTS; ++p) acc[p] = _mm512_setzero_si512();
                for (int64_t s = 0; s < STEPS; ++s) {
                    const bool whole = s * 32 + 32 <= GROUPS;  // the last step may hold one block only
                    if (m == 0) {
                        prefetch_codes((const uint8_t*)row + s * 64);
                        prefetch_codes(code_row + s * 16);
                    }
                    const __m512i v = whole ? _mm512_loadu_si512(row + s * 64)
                                            : _mm512_maskz_loadu_epi8((__mmask64)0xFFFFFFFF, row + s * 64);
                    const __m512i c = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(code_row + s * 16)));
                    const __mmask64 outer = _mm512_test_epi8_mask(c, outer_bit);
                    const __mmask64 middle = _mm512_test_epi8_mask(c, middle_bit);
                    if (m == 0) vsum = _mm512_dpbusd_epi32(vsum, ones, v);
                    for (int p = 0; p < PARTS; ++p) {
                        const uint8_t* cand = a.candidates[p][m][s][0];
                        const __m512i inner = _mm512_mask_blend_epi8(middle, _mm512_load_si512(cand + 128), _mm512_load_si512(cand + 64));
                        const __m512i u = _mm512_mask_blend_epi8(outer, inner, _mm512_load_si512(cand));
                        acc[p] = _mm512_dpbusd_epi32(acc[p], u, v);
                    }
                }
                if (m == 0) value_sum = _mm512_reduce_add_epi32(vsum);
                float dot = 0.f;
                for (int p = 0; p < PARTS; ++p)
                    dot += a.scale[m][p] * (float)(_mm512_reduce_add_epi32(acc[p]) - 128 * value_sum);
                out[n * M_ROWS + m] = dot;
            }
        }
    }
}
