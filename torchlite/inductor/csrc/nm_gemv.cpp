// Decode-shaped 2:4 sparse linear over int8 values (torchlite.numerics.nm storage) with integer dot
// products on every tier of simd.h, without the row scale (the caller's epilogue applies it).
// torchlite/inductor/sparse.py prepends simd.h, activation_parts.h and the #defines: M_ROWS, N_OUT, K_IN,
// KP, GROUPS (K_IN / 4, a multiple of 16), CODE_BYTES (per row), PARTS, STATIC_X_SCALE.
//
// Per weight row: int8 values in blocks of 16 groups, slot-major (16 slot-0 values, then 16 slot-1),
// and a 4-bit code per group: slot 0 takes input 0 of its group if bit 3, else 1 if bit 2, else 2;
// slot 1 takes input 3 if bit 1, else 2 if bit 2, else 1. A step is 32 groups, whose 64 value bytes
// are [slot 0 of groups 0-15 | slot 1 of 0-15 | slot 0 of 16-31 | slot 1 of 16-31] (four 16-byte
// lanes) and whose 16 code bytes hold groups 0-15 in their low nibbles and 16-31 in their high ones:
// broadcast to every lane, each lane tests its own bits. The activations are quantized into PARTS
// int8 parts (activation_parts.h) and laid out per step in that order as three candidate vectors, NEAR
// (input 0 | input 3), MID (1 | 2) and FAR (2 | 1), plus BIAS (unsigned operands): two byte selects
// driven by the code bits pick each value's activation, and simd::dot multiplies the pairs.
// Σ (q + BIAS)·v = Σ q·v + BIAS·Σ v, with Σ v from one more dot against ones where BIAS ≠ 0;
// out[n, m] = Σ_p s_p·(Σ (q + BIAS)·v − BIAS·Σ v).
using namespace simd;
constexpr int64_t STEPS = (GROUPS + 31) / 32;
constexpr int64_t VPS = 64 / W;  // vectors per step
static_assert(GROUPS % 16 == 0 && GROUPS * 4 == K_IN, "2:4 storage in whole blocks of 16 groups");
static_assert(KP >= STEPS * 128, "activations are padded to whole steps");
static_assert(K_IN <= 65536, "int32 accumulators could overflow");

// Per-call scratch (heap, so concurrent calls of one kernel do not share it).
struct Scratch {
    alignas(64) uint8_t candidates[PARTS][M_ROWS][STEPS][3][64];  // NEAR, MID, FAR per step
    alignas(64) int8_t natural[PARTS][KP];                        // one row's parts in input order
    alignas(64) uint8_t planes[4][STEPS * 32];                    // input r of every group, + BIAS
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
                for (int r = 0; r < 4; ++r) a.planes[r][g] = (uint8_t)((g < GROUPS ? a.natural[p][4 * g + r] : 0) + BIAS);
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
    // per 16-byte lane of a step (slot 0 / 1 of groups 0-15, of groups 16-31): the outer bit (3 or 1 of
    // the group's nibble) and the middle one (2)
    constexpr uint8_t OUTER[4] = {0x08, 0x02, 0x80, 0x20}, MIDDLE[4] = {0x04, 0x04, 0x40, 0x40};
    alignas(64) uint8_t outer_bits[64], middle_bits[64];
    for (int i = 0; i < 64; ++i) {
        outer_bits[i] = OUTER[i / 16];
        middle_bits[i] = MIDDLE[i / 16];
    }
    const V8 ones = splat8(1);
    #pragma omp parallel
    {
        V8 outer_bit[VPS], middle_bit[VPS];
        for (int64_t v = 0; v < VPS; ++v) {
            outer_bit[v] = load8(outer_bits + v * W);
            middle_bit[v] = load8(middle_bits + v * W);
        }
        const ThreadRows rows;
        for (int64_t r = 0; r < rows.count; ++r) {
            const int64_t n = rows[r];
            const int8_t* row = values + n * 2 * GROUPS;
            const uint8_t* code_row = codes + n * CODE_BYTES;
            int32_t value_sum = 0;
            for (int64_t m = 0; m < M_ROWS; ++m) {
                V32 acc[PARTS], vsum = zero32();
                for (int p = 0; p < PARTS; ++p) acc[p] = zero32();
                for (int64_t s = 0; s < STEPS; ++s) {
                    const int64_t left = 2 * GROUPS - s * 64;  // the last step may hold one block only
                    if (m == 0) {
                        prefetch_codes(row + s * 64);
                        prefetch_codes(code_row + s * 16);
                    }
                    const V8 c = broadcast16(code_row + s * 16);
                    for (int64_t v = 0; v < VPS && v * W < left; ++v) {
                        const V8 w = load8_n(row + s * 64 + v * W, left - v * W);
                        if (BIAS && m == 0) vsum = dot(vsum, ones, w);
                        for (int p = 0; p < PARTS; ++p) {
                            const uint8_t* cand = a.candidates[p][m][s][0] + v * W;
                            const V8 inner = select(c, middle_bit[v], load8(cand + 64), load8(cand + 128));
                            acc[p] = dot(acc[p], select(c, outer_bit[v], load8(cand), inner), w);
                        }
                    }
                }
                if (m == 0) value_sum = sum32(vsum);
                float sum = 0.f;
                for (int p = 0; p < PARTS; ++p) sum += a.scale[m][p] * (float)(sum32(acc[p]) - BIAS * value_sum);
                out[n * M_ROWS + m] = sum;
            }
        }
    }
}
