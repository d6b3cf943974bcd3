// Decode-shaped linear over 8- or 4-bit weight codes with integer dot products, on every tier of simd.h.
// torchlite/inductor/vnni.py prepends simd.h, activation_parts.h and the #defines: M_ROWS, N_OUT, K_IN,
// KP, NIBBLES, BLOCK, GROUP, SCALED, SCALE_ROWS, SCALE_COLS, HAS_ZERO, OFFSET, FLIP_SIGN, VALUE_SCALE,
// LUT_VALUES, PARTS, STATIC_X_SCALE.
//
// Every weight is an unsigned byte u with value (u - off) * VALUE_SCALE * s[n, g]: off is the zero
// point z[n, g] or the constant OFFSET. Bytes (int8): u = stored byte (xor 0x80 when FLIP_SIGN, i.e.
// int8 + 128). Nibbles (torchlite.numerics.linear's block layout: in each block of BLOCK codes, byte i
// holds code i in its low and code i + BLOCK/2 in its high nibble): u = LUT[code] via one byte shuffle.
// The activations come as PARTS int8 parts x ≈ Σ_p s_p·q_p (activation_parts.h), and simd::dot adds
// Σ (u - SHIFT)·q_p per 4 byte pairs into int32 (SHIFT puts u - SHIFT in the tier's operand range:
// 0 for unsigned operands and tables within 0..127, else the constant offset where it fits a signed
// byte, or 128). So
// out[n, m] = VALUE_SCALE · Σ_g s (Σ_p s_p·Σ (u - SHIFT)·q_p − (off - SHIFT)·Σ_g x̂), with Σ_g x̂ the
// group sums of the quantized activations (the offset term then cancels exactly); a per-channel (or per-tensor) scale multiplies
// the row's result at the end, so no epilogue pass is needed after the kernel. W8A8 is PARTS = 1:
// exactly torchlite::qlinear_a8's int8 activations.
// A step is 64 weights; the activations are stored in step order (for nibbles: the inputs of the 32
// low codes, then of the 32 high codes). Groups of 32 (SPLIT) put two scale groups in each step: the
// step's products are scaled per lane (like llama.cpp's Q4_0 / Q8_0 blocks) instead of per group.
static_assert(KP % 64 == 0 && (GROUP % 64 == 0 || GROUP == 32) && KP % GROUP == 0, "layout the kernel cannot take");
static_assert(!NIBBLES || ((BLOCK % 64 == 0 || BLOCK == 32) && GROUP % BLOCK == 0), "nibble layout the kernel cannot take");
static_assert(KP / 64 < (1 << 14), "int32 accumulators could overflow");
using namespace simd;
constexpr int64_t NG = KP / GROUP;        // scale groups per row
constexpr int64_t STEPS = KP / 64;        // 64-weight steps per row
constexpr bool SPLIT = GROUP == 32;
constexpr int64_t GROUP_STEPS = SPLIT ? 1 : GROUP / 64;
constexpr int64_t VPS = 64 / W;           // vectors per step
constexpr int U = !SPLIT && GROUP_STEPS % 2 == 0 ? 2 : 1;  // steps per iteration
constexpr int64_t VU = U * VPS;           // weight vectors per iteration
// Nibbles in 64-byte vectors, two steps at a time: 64 bytes give the low codes of both steps in one
// vector and the high codes in another (no lane insert); the activations are then stored per step pair
// as [low inputs of s, of s + 1, high inputs of s, of s + 1]. (32-byte vectors get that from one step.)
constexpr bool PAIRED = NIBBLES && W == 64 && U == 2;
constexpr int64_t ROW_BYTES = NIBBLES ? KP / 2 : KP;
constexpr int64_t MC = M_ROWS % 2 == 0 ? 2 : 1;  // activation rows per pass over a weight row
constexpr int A = VU % 2 == 0 && MC * PARTS * 2 + VU + 2 <= REGISTERS ? 2 : 1;  // accumulators per part (latency)
constexpr int64_t STEP_BYTES = ROW_BYTES / STEPS;
constexpr uint8_t LUT_U[16] = {LUT_VALUES};

constexpr bool fits_signed_after(int shift) {
    for (int i = 0; i < 16; ++i)
        if (LUT_U[i] - shift < -128 || LUT_U[i] - shift > 127) return false;
    return true;
}
constexpr bool small_table() {
    for (int i = 0; i < 16; ++i)
        if (LUT_U[i] > 127) return false;
    return true;
}
// Table values in 0..127 (int2-int4 codes) go unshifted through `dot_small` (no sign trick on AVX2)
constexpr bool SMALL = NIBBLES && small_table();
constexpr int SHIFT = BIAS || SMALL ? 0
                    : !NIBBLES || HAS_ZERO || !fits_signed_after((int)OFFSET) ? 128 : (int)OFFSET;
constexpr uint8_t XOR_BYTES = (FLIP_SIGN ? 0x80 : 0x00) ^ (SHIFT == 128 ? 0x80 : 0x00);  // bytes: SHIFT is 0 or 128

// Per-call scratch (heap, so concurrent calls of one kernel do not share it).
struct Activations {
    alignas(64) int8_t q[PARTS][M_ROWS * KP];  // activation parts in step order
    alignas(64) int8_t natural[PARTS][KP];     // one row's parts in input order
    alignas(64) float rest[KP];                // what the parts so far leave over
    float scale[M_ROWS][PARTS];
    float sum[M_ROWS * NG];                    // group sums of the quantized activations
};

// x [M_ROWS, K_IN] -> the parts (zero-padded to KP), their scales and group sums.
static void quantize_activations(const float* x, const float* x_scale, Activations& a) {
    for (int64_t m = 0; m < M_ROWS; ++m) {
        quantize_parts(x + m * K_IN, x_scale, a.rest, a.natural, a.scale[m]);
        for (int64_t s = 0; s < STEPS; ++s) {
            for (int half = 0; half < 2; ++half) {
                if (NIBBLES && BLOCK == 32) {  // the step's two blocks: [low 16 of each | high 16 of each]
                    for (int j = 0; j < 2; ++j)
                        for (int p = 0; p < PARTS; ++p)
                            std::memcpy(a.q[p] + m * KP + s * 64 + half * 32 + j * 16, a.natural[p] + s * 64 + j * 32 + half * 16, 16);
                    continue;
                }
                const int64_t block_steps = std::max<int64_t>(BLOCK / 64, 1);
                int64_t k = NIBBLES ? (s / block_steps) * BLOCK + (s % block_steps) * 32 + half * (BLOCK / 2) : s * 64 + half * 32;
                int64_t at = m * KP + (PAIRED ? (s / 2) * 128 + half * 64 + (s % 2) * 32 : s * 64 + half * 32);
                for (int p = 0; p < PARTS; ++p) std::memcpy(a.q[p] + at, a.natural[p] + k, 32);
            }
        }
        for (int64_t g = 0; g < NG; ++g) a.sum[m * NG + g] = quantized_sum(a.natural, a.scale[m], g * GROUP, (g + 1) * GROUP);
    }
}

// The VU operand vectors of steps s .. s + U - 1, in the activations' order.
static inline void weight_vectors(const uint8_t* row, int64_t s, V8 lut, V8 flip, V8* w) {
    if (PAIRED) {
        const V8 raw = load8(row + s * 32);
        w[0] = lut16(lut, low4(raw));
        w[1] = lut16(lut, high4(raw));
    } else if (NIBBLES) {
        for (int u = 0; u < U; ++u) {
            V8 codes[VPS];
            nibble_step(row + (s + u) * 32, codes);
            for (int64_t c = 0; c < VPS; ++c) w[u * VPS + c] = lut16(lut, codes[c]);
        }
    } else {
        for (int64_t v = 0; v < VU; ++v) {
            w[v] = load8(row + s * 64 + v * W);
            if (XOR_BYTES) w[v] = xor8(w[v], flip);
        }
    }
}

// SPLIT: out[n, m] for weight row n, two scale groups per step. `second[v]`: 1.0 on the lanes of
// vector v that belong to the step's second group, else 0.
static inline void split_row(int64_t n, const uint8_t* row, const float* scale, const uint8_t* zero, const Activations& a,
                             V8 lut, V8 flip, const float (*second)[W / 4], float* out) {
    for (int64_t m0 = 0; m0 < M_ROWS; m0 += MC) {
        VF total[MC][PARTS];
        float zterm[MC] = {};
        for (int64_t m = 0; m < MC; ++m)
            for (int p = 0; p < PARTS; ++p) total[m][p] = zerof();
        for (int64_t s = 0; s < STEPS; ++s) {
            if (m0 == 0) prefetch_codes(row + s * STEP_BYTES);
            V8 w[VPS];
            weight_vectors(row, s, lut, flip, w);
            const int64_t at = (SCALE_ROWS > 1 ? n * SCALE_COLS : 0) + 2 * s;
            const float s0 = scale[at], s1 = scale[at + 1];
            const float off0 = (HAS_ZERO ? (float)zero[at] : (float)OFFSET) - (float)SHIFT;
            const float off1 = (HAS_ZERO ? (float)zero[at + 1] : (float)OFFSET) - (float)SHIFT;
            VF sv[VPS];
            for (int64_t v = 0; v < VPS; ++v) sv[v] = fmaddv(splatf(s1 - s0), loadf(second[v]), splatf(s0));
            for (int64_t m = 0; m < MC; ++m) {
                for (int64_t v = 0; v < VPS; ++v)
                    for (int p = 0; p < PARTS; ++p) {
                        const V8 xq = load8(a.q[p] + (m0 + m) * KP + s * 64 + v * W);
                        const V32 d = SMALL ? dot_small(zero32(), w[v], xq) : dot(zero32(), w[v], xq);
                        total[m][p] = fmaddv(to_float(d), sv[v], total[m][p]);
                    }
                zterm[m] += s0 * off0 * a.sum[(m0 + m) * NG + 2 * s] + s1 * off1 * a.sum[(m0 + m) * NG + 2 * s + 1];
            }
        }
        for (int64_t m = 0; m < MC; ++m) {
            float sum = 0.f;
            for (int p = 0; p < PARTS; ++p) sum += a.scale[m0 + m][p] * sumf(total[m][p]);
            out[n * M_ROWS + m0 + m] = (float)VALUE_SCALE * (sum - zterm[m]);
        }
    }
}

extern "C" void kernel(const float* x, const uint8_t* codes, const float* scale, const uint8_t* zero,
                       const float* x_scale, float* out) {
    std::unique_ptr<Activations> scratch(new Activations);
    const Activations& a = *scratch;
    quantize_activations(x, x_scale, *scratch);
    alignas(64) uint8_t lut_bytes[64];
    for (int i = 0; i < 64; ++i) lut_bytes[i] = (uint8_t)(LUT_U[i % 16] - SHIFT);
    const V8 lut = load8(lut_bytes), flip = splat8(XOR_BYTES);
    alignas(64) float second[VPS][W / 4];
    for (int64_t v = 0; v < VPS; ++v)
        for (int64_t l = 0; l < W / 4; ++l) {
            const int64_t at = v * W + 4 * l;  // the lane's first byte in the step's activation order
            second[v][l] = (float)(NIBBLES ? (at % 32) / 16 : at / 32);
        }
    #pragma omp parallel
    {
        const ThreadRows rows;
        for (int64_t r = 0; r < rows.count; ++r) {
            const int64_t n = rows[r];
            const uint8_t* row = codes + n * ROW_BYTES;
            if (SPLIT) {
                split_row(n, row, scale, zero, a, lut, flip, second, out);
                continue;
            }
            // Activation rows in chunks of MC: more accumulators than registers would spill; the weight
            // row is read from memory once and from the cache for the further chunks.
            for (int64_t m0 = 0; m0 < M_ROWS; m0 += MC) {
                VF total[MC][PARTS];
                float zterm[MC];
                for (int64_t m = 0; m < MC; ++m) {
                    for (int p = 0; p < PARTS; ++p) total[m][p] = zerof();
                    zterm[m] = 0.f;
                }
                for (int64_t g = 0; g < NG; ++g) {
                    V32 acc[MC][PARTS][A];
                    for (int64_t m = 0; m < MC; ++m)
                        for (int p = 0; p < PARTS; ++p)
                            for (int u = 0; u < A; ++u) acc[m][p][u] = zero32();
                    for (int64_t s = g * GROUP_STEPS; s < (g + 1) * GROUP_STEPS; s += U) {
                        if (m0 == 0)
                            for (int64_t b = 0; b < U * STEP_BYTES; b += 64) prefetch_codes(row + s * STEP_BYTES + b);
                        V8 w[VU];
                        weight_vectors(row, s, lut, flip, w);
                        for (int64_t m = 0; m < MC; ++m)
                            for (int64_t v = 0; v < VU; ++v)
                                for (int p = 0; p < PARTS; ++p) {
                                    const int8_t* xq = a.q[p] + (m0 + m) * KP + s * 64 + v * W;
                                    acc[m][p][v % A] = SMALL ? dot_small(acc[m][p][v % A], w[v], load8(xq))
                                                             : dot(acc[m][p][v % A], w[v], load8(xq));
                                }
                    }
                    const int64_t at = (SCALE_ROWS > 1 ? n * SCALE_COLS : 0) + (SCALE_COLS > 1 ? g : 0);
                    const float s = SCALED ? scale[at] : 1.f;
                    const float off = (HAS_ZERO ? (float)zero[at] : (float)OFFSET) - (float)SHIFT;
                    for (int64_t m = 0; m < MC; ++m) {
                        for (int p = 0; p < PARTS; ++p) {
                            V32 sum = acc[m][p][0];
                            if (A == 2) sum = add32(sum, acc[m][p][A - 1]);
                            total[m][p] = fmadd(to_float(sum), s, total[m][p]);
                        }
                        zterm[m] += s * off * a.sum[(m0 + m) * NG + g];
                    }
                }
                for (int64_t m = 0; m < MC; ++m) {
                    float sum = 0.f;
                    for (int p = 0; p < PARTS; ++p) sum += a.scale[m0 + m][p] * sumf(total[m][p]);
                    const float v = (float)VALUE_SCALE * (sum - zterm[m]);
                    out[n * M_ROWS + m0 + m] = SCALED ? v : v * scale[SCALE_ROWS > 1 ? n * SCALE_COLS : 0];
                }
            }
        }
    }
}
