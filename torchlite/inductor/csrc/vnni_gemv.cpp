// Decode-shaped linear over 8- or 4-bit weight codes with AVX512-VNNI integer dot products.
// torchlite/inductor/vnni.py prepends the #defines: M_ROWS, N_OUT, K_IN, KP, NIBBLES, BLOCK, GROUP,
// SCALED, SCALE_ROWS, SCALE_COLS, HAS_ZERO, OFFSET, FLIP_SIGN, VALUE_SCALE, LUT_VALUES, PARTS,
// STATIC_X_SCALE.
//
// Every weight is an unsigned byte u with value (u - off) * VALUE_SCALE * s[n, g]: off is the zero
// point z[n, g] or the constant OFFSET. Bytes (int8): u = stored byte (xor 0x80 when FLIP_SIGN, i.e.
// int8 + 128). Nibbles (torchlite.quant.linear's block layout: in each block of BLOCK codes, byte i
// holds code i in its low and code i + BLOCK/2 in its high nibble): u = LUT[code] via one byte shuffle.
// The activations come as PARTS int8 parts x ≈ Σ_p s_p·q_p (activation_parts.h, prepended), and
// vpdpbusd multiplies 64 byte pairs per instruction into int32. So out[n, m] = VALUE_SCALE ·
// Σ_g s (Σ_p s_p·Σ u·q_p − off·Σ_g x̂), with Σ_g x̂ the group sums of the quantized activations (the
// offset term then cancels exactly); a per-channel (or per-tensor) scale multiplies the row's result
// at the end, so no epilogue pass is needed after the kernel. W8A8 is PARTS = 1: exactly
// torchlite::qlinear_a8's int8 activations.
// A step is 64 weights; the activations are stored in step order (for nibbles: the inputs of the 32
// low codes, then of the 32 high codes).
static_assert(KP % 64 == 0 && GROUP % 64 == 0 && KP % GROUP == 0, "layout the kernel cannot take");
static_assert(!NIBBLES || (BLOCK % 64 == 0 && GROUP % BLOCK == 0), "nibble layout the kernel cannot take");
static_assert(KP / 64 < (1 << 14), "int32 accumulators could overflow");
constexpr int64_t NG = KP / GROUP;        // scale groups per row
constexpr int64_t STEPS = KP / 64;        // 64-weight steps per row
constexpr int64_t GROUP_STEPS = GROUP / 64;
constexpr int U = GROUP_STEPS % 2 == 0 ? 2 : 1;  // independent accumulators per part (latency)
// Nibbles, two steps at a time: 64 bytes give the low codes of both steps in one vector and the high
// codes in another (no lane insert); the activations are then stored per step pair as
// [low inputs of s, of s + 1, high inputs of s, of s + 1].
constexpr bool PAIRED = NIBBLES && U == 2;
constexpr int64_t ROW_BYTES = NIBBLES ? KP / 2 : KP;
constexpr int64_t MC = M_ROWS % 2 == 0 ? 2 : 1;  // activation rows per pass over a weight row
constexpr int64_t STEP_BYTES = ROW_BYTES / STEPS;

alignas(64) static const uint8_t LUT[64] = {LUT_VALUES, LUT_VALUES, LUT_VALUES, LUT_VALUES};

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
                int64_t k = NIBBLES ? (s / (BLOCK / 64)) * BLOCK + (s % (BLOCK / 64)) * 32 + half * (BLOCK / 2) : s * 64 + half * 32;
                int64_t at = m * KP + (PAIRED ? (s / 2) * 128 + half * 64 + (s % 2) * 32 : s * 64 + half * 32);
                for (int p = 0; p < PARTS; ++p)
                    _mm256_store_si256((__m256i*)(a.q[p] + at), _mm256_load_si256((const __m256i*)(a.natural[p] + k)));
            }
        }
        for (int64_t g = 0; g < NG; ++g) a.sum[m * NG + g] = quantized_sum(a.natural, a.scale[m], g * GROUP, (g + 1) * GROUP);
    }
}

static inline __m512i weight_bytes(const uint8_t* row, int64_t s, __m512i lut) {
    if (NIBBLES) {
        __m256i raw = _mm256_loadu_si256((const __m256i*)(row + s * 32));
        __m256i low4 = _mm256_set1_epi8(0x0F);
        __m256i lo = _mm256_and_si256(raw, low4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
        return _mm512_shuffle_epi8(lut, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
    }
    __m512i w = _mm512_loadu_si512(row + s * 64);
    return FLIP_SIGN ? _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80)) : w;
}

extern "C" void kernel(const float* x, const uint8_t* codes, const float* scale, const uint8_t* zero,
                       const float* x_scale, float* out) {
    std::unique_ptr<Activations> scratch(new Activations);
    const Activations& a = *scratch;
    quantize_activations(x, x_scale, *scratch);
    const __m512i lut = _mm512_load_si512(LUT);
    #pragma omp parallel
    {
        const ThreadRows rows;
        for (int64_t r = 0; r < rows.count; ++r) {
            const int64_t n = rows[r];
            const uint8_t* row = codes + n * ROW_BYTES;
            // Activation rows in chunks of MC: more accumulators than registers would spill; the weight
            // row is read from memory once and from the cache for the further chunks.
            for (int64_t m0 = 0; m0 < M_ROWS; m0 += MC) {
                __m512 total[MC][PARTS];
                float zterm[MC];
                for (int64_t m = 0; m < MC; ++m) {
                    for (int p = 0; p < PARTS; ++p) total[m][p] = _mm512_setzero_ps();
                    zterm[m] = 0.f;
                }
                for (int64_t g = 0; g < NG; ++g) {
                    __m512i acc[MC][PARTS][U];
                    for (int64_t m = 0; m < MC; ++m)
                        for (int p = 0; p < PARTS; ++p)
                            for (int u = 0; u < U; ++u) acc[m][p][u] = _mm512_setzero_si512();
                    for (int64_t s = g * GROUP_STEPS; s < (g + 1) * GROUP_STEPS; s += U) {
                        if (m0 == 0)
                            for (int64_t b = 0; b < U * STEP_BYTES; b += 64) prefetch_codes(row + s * STEP_BYTES + b);
                        __m512i w[U];
                        if (PAIRED) {
                            const __m512i low4 = _mm512_set1_epi8(0x0F);
                            __m512i raw = _mm512_loadu_si512(row + s * 32);
                            w[0] = _mm512_shuffle_epi8(lut, _mm512_and_si512(raw, low4));
                            w[U - 1] = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4));
                        } else {
                            for (int u = 0; u < U; ++u) w[u] = weight_bytes(row, s + u, lut);
                        }
                        for (int64_t m = 0; m < MC; ++m)
                            for (int u = 0; u < U; ++u)
                                for (int p = 0; p < PARTS; ++p) {
                                    const int8_t* xq = a.q[p] + (m0 + m) * KP + (s + u) * 64;
                                    acc[m][p][u] = _mm512_dpbusd_epi32(acc[m][p][u], w[u], _mm512_load_si512(xq));
                                }
                    }
                    const int64_t at = (SCALE_ROWS > 1 ? n * SCALE_COLS : 0) + (SCALE_COLS > 1 ? g : 0);
                    const float s = SCALED ? scale[at] : 1.f;
                    const float off = HAS_ZERO ? (float)zero[at] : (float)OFFSET;
                    const __m512 sv = _mm512_set1_ps(s);
                    for (int64_t m = 0; m < MC; ++m) {
                        for (int p = 0; p < PARTS; ++p) {
                            __m512i sum = acc[m][p][0];
                            if (U == 2) sum = _mm512_add_epi32(sum, acc[m][p][U - 1]);
                            total[m][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), sv, total[m][p]);
                        }
                        zterm[m] += s * off * a.sum[(m0 + m) * NG + g];
                    }
                }
                for (int64_t m = 0; m < MC; ++m) {
                    float dot = 0.f;
                    for (int p = 0; p < PARTS; ++p) dot += a.scale[m0 + m][p] * _mm512_reduce_add_ps(total[m][p]);
                    const float v = (float)VALUE_SCALE * (dot - zterm[m]);
                    out[n * M_ROWS + m0 + m] = SCALED ? v : v * scale[SCALE_ROWS > 1 ? n * SCALE_COLS : 0];
                }
            }
        }
    }
}
