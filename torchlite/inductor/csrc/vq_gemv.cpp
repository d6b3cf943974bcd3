// Decode-shaped linear over vector-quantized weights (torchlite.quant.vector), without the row scale
// (the caller's epilogue applies it): out[n, m] = Σ_j T[g(n), m, j, code[n, j]], where the table
// T[g, m, j, c] = dot(x[m, j·D : (j+1)·D], codebook[g, c]) is built once per call (J·C·D multiply-adds
// per activation row and codebook, against N·J·D for the layer) and each 16 codes of a row cost one
// gather (vgatherdps) and one add instead of D gathers and D multiply-adds. torchlite/inductor/vector.py
// prepends the #defines: M_ROWS, N_OUT, J, D, C, G, GROUP_ROWS, NIBBLES.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#include <immintrin.h>
#include <cstdint>
#include <memory>

constexpr int64_t TABLE = (int64_t)J * C;                     // floats per (codebook, activation row)
constexpr int64_t ROW_BYTES = NIBBLES ? (J + 1) / 2 : J;      // codes: two per byte when C <= 16
// Per-call scratch (heap, so concurrent calls of one kernel do not share it).
struct Tables {
    alignas(64) float t[G * M_ROWS * TABLE];
    alignas(64) float cbt[G * D * C];  // the codebooks transposed: [g][t][c]
};

static void build_tables(const float* x, const float* codebook, Tables& tb) {
    float* TBL = tb.t;
    float* CBT = tb.cbt;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < D; ++t) CBT[(g * D + t) * C + c] = codebook[(g * C + c) * D + t];
    #pragma omp parallel for schedule(static)
    for (int64_t gmj = 0; gmj < G * M_ROWS * J; ++gmj) {
        const int64_t g = gmj / (M_ROWS * J), m = (gmj / J) % M_ROWS, j = gmj % J;
        const float* xj = x + m * J * D + j * D;
        float* out = TBL + gmj * C;
        for (int64_t c = 0; c < C; c += 16) {
            const __mmask16 mask = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
            __m512 acc = _mm512_setzero_ps();
            for (int64_t t = 0; t < D; ++t)
                acc = _mm512_fmadd_ps(_mm512_set1_ps(xj[t]), _mm512_maskz_loadu_ps(mask, CBT + (g * D + t) * C + c), acc);
            _mm512_mask_storeu_ps(out + c, mask, acc);
        }
    }
}

// Codes j .. j+15 of a row as int32 lanes (masked loads: the last row's end is the buffer's end).
static inline __m512i codes16(const uint8_t* row, int64_t j, int64_t left) {
    if (NIBBLES) {
        const int64_t bytes = left >= 16 ? 8 : (left + 1) / 2;
        __m128i b = _mm_maskz_loadu_epi8((__mmask16)((1u << bytes) - 1), row + j / 2);
        const __m128i low4 = _mm_set1_epi8(0x0F);
        __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
        return _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
    }
    const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, row + j));
}

extern "C" void kernel(const float* x, const uint8_t* codes, const float* codebook, float* out) {
    std::unique_ptr<Tables> scratch(new Tables);
    build_tables(x, codebook, *scratch);
    const float* TBL = scratch->t;
    const __m512i lane_offset = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(C));
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N_OUT; ++n) {
        const uint8_t* row = codes + n * ROW_BYTES;
        const float* tables = TBL + (n / GROUP_ROWS) * M_ROWS * TABLE;
        __m512 acc[M_ROWS];
        for (int64_t m = 0; m < M_ROWS; ++m) acc[m] = _mm512_setzero_ps();
        for (int64_t j = 0; j < J; j += 16) {
            const int64_t left = J - j;
            const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            const __m512i idx = _mm512_add_epi32(codes16(row, j, left), lane_offset);
            for (int64_t m = 0; m < M_ROWS; ++m) {
                const float* base = tables + m * TABLE + j * C;
                acc[m] = _mm512_add_ps(acc[m], _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, idx, base, 4));
            }
        }
        for (int64_t m = 0; m < M_ROWS; ++m) out[n * M_ROWS + m] = _mm512_reduce_add_ps(acc[m]);
    }
}
