// Decode-shaped linear over vector-quantized weights in byte codes (torchlite.quant.vector, 17..256
// centroids) by table lookups of dot products, without the row scale (the caller's epilogue applies it).
// torchlite/inductor/vector.py prepends prefetch.h and the #defines: M_ROWS, N_OUT, J (sub-vectors per row), D, C, G,
// GROUP_ROWS (a multiple of 64, or N_OUT).
//
// Per call and activation row, every sub-vector position j gets a table of the dot products of its D
// inputs with every centroid, P[j, c] = Σ_t x[j·D + t]·codebook[c, t], as two byte parts of one scale
// per table set (u = round(P / S1) + 128, then the rest in steps of S2 = S1 / 254): ~15 bits. The codes
// are stored in 64-row tiles ([ceil(N/64), J, 64]: the 64 rows' codes of one position are one 64-byte
// vector), so one in-register lookup (vpermb / vpermi2b, two merge-masked ones for 256 entries) serves
// the 64 rows at once: out[n] = Σ_j P[j, code[n, j]], whatever D is. Sums run in 16-bit lanes for 256
// positions at a time (the word sums wrap; the odd rows' bytes are summed apart, which recovers the even
// rows' sums exactly), then widen to 32 bits.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,fma")
#include <immintrin.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>

constexpr int64_t TILES = (N_OUT + 63) / 64;
constexpr int NT = C <= 64 ? 1 : C <= 128 ? 2 : 4;     // 64-byte table vectors per part
constexpr int64_t TABLE = 2 * NT * 64;                 // bytes of one position's two parts
constexpr int64_t TILES_PER_GROUP = G == 1 ? TILES : GROUP_ROWS / 64;
constexpr int64_t TB = 4;                              // tiles sharing one table load (4 code streams; 2 and 6 were slower)
constexpr int64_t CHUNK = 256;                         // positions per 16-bit sum (255 · 256 < 2^16)
static_assert(G == 1 || GROUP_ROWS % 64 == 0, "codebook groups are whole tiles");

struct Tables {
    uint8_t* bytes;  // [M_ROWS][G][J][2][NT * 64]
    float s1[M_ROWS][G], s2[M_ROWS][G];
    Tables() : bytes((uint8_t*)std::aligned_alloc(64, M_ROWS * G * J * TABLE)) {}
    ~Tables() { std::free(bytes); }
};

// S1 and S2 per activation row and codebook, from a bound on |P|: Σ_t |x_t| · max_c |codebook[c, t]|.
static void table_scales(const float* x, const float* codebook, Tables& tab) {
    for (int64_t g = 0; g < G; ++g) {
        float top[D] = {};
        for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < D; ++t) top[t] = std::max(top[t], std::fabs(codebook[(g * C + c) * D + t]));
        for (int64_t m = 0; m < M_ROWS; ++m) {
            float bound = 0.f;
            for (int64_t j = 0; j < J; ++j) {
                float b = 0.f;
                for (int64_t t = 0; t < D; ++t) b += std::fabs(x[m * J * D + j * D + t]) * top[t];
                bound = std::max(bound, b);
            }
            tab.s1[m][g] = std::max(bound, 1e-30f) / 127.f;
            tab.s2[m][g] = tab.s1[m][g] / 254.f;
        }
    }
}

// Both parts of position j's table for activation row m and codebook g. codebook_t holds each group
// of 64 centroids as four 16-float vectors in pack order (`pack_order`), so that the two saturating packs
// of four converted vectors leave the 64 bytes in centroid order.
static void build_table(const float* x, const float* codebook_t, const Tables& tab, int64_t m, int64_t g, int64_t j) {
    const float s1 = tab.s1[m][g];
    const __m512 inv1 = _mm512_set1_ps(1.f / s1), inv2 = _mm512_set1_ps(1.f / tab.s2[m][g]), vs1 = _mm512_set1_ps(s1);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 xs[D];
    for (int64_t t = 0; t < D; ++t) xs[t] = _mm512_set1_ps(x[m * J * D + j * D + t]);
    uint8_t* out = tab.bytes + ((m * G + g) * J + j) * TABLE;
    for (int64_t q = 0; q < NT; ++q) {
        __m512i hi[4], lo[4];
        for (int64_t v = 0; v < 4; ++v) {
            const float* cb = codebook_t + ((g * NT + q) * 4 + v) * D * 16;
            __m512 p = _mm512_mul_ps(xs[0], _mm512_load_ps(cb));
            for (int64_t t = 1; t < D; ++t) p = _mm512_fmadd_ps(xs[t], _mm512_load_ps(cb + t * 16), p);
            const __m512 h = _mm512_roundscale_ps(_mm512_mul_ps(p, inv1), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            hi[v] = _mm512_cvtps_epi32(h);
            lo[v] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_fnmadd_ps(h, vs1, p), inv2));  // rounds to nearest even
        }
        const __m512i h8 = _mm512_packs_epi16(_mm512_packs_epi32(hi[0], hi[1]), _mm512_packs_epi32(hi[2], hi[3]));
        const __m512i l8 = _mm512_packs_epi16(_mm512_packs_epi32(lo[0], lo[1]), _mm512_packs_epi32(lo[2], lo[3]));
        _mm512_store_si512(out + q * 64, _mm512_xor_si512(h8, flip));
        _mm512_store_si512(out + (NT + q) * 64, _mm512_xor_si512(l8, flip));
    }
}

// The centroid whose value lane e of vector v (of four) carries: packs interleave per 128-bit lane.
static inline int64_t pack_order(int64_t v, int64_t e) { return 16 * (e / 4) + 4 * v + e % 4; }

static inline __m512i lookup(const __m512i* t, __m512i idx, __mmask64 high) {
    if (NT == 1) return _mm512_permutexvar_epi8(idx, t[0]);
    if (NT == 2) return _mm512_permutex2var_epi8(t[0], idx, t[1]);
    // 256 entries: the upper half's permute fills the lanes of codes >= 128 and keeps the others' codes
    // (vpermi2b's merge keeps the index), which the lower half's permute then fills
    const __m512i upper = _mm512_mask2_permutex2var_epi8(t[2], idx, high, t[3]);
    return _mm512_mask2_permutex2var_epi8(t[0], upper, (__mmask64)~high, t[1]);
}

// Sums of N_TILES tiles (from tile t0, codebook g) for activation row m into out.
template <int64_t N_TILES>
static void tiles(const uint8_t* codes, const Tables& tab, int64_t m, int64_t g, int64_t t0, float* out) {
    int32_t total[N_TILES][2][2][32] = {};  // [tile][part][even / odd row][row pair]
    for (int64_t j0 = 0; j0 < J; j0 += CHUNK) {
        __m512i acc[N_TILES][2][2];
        for (int64_t u = 0; u < N_TILES; ++u)
            for (int p = 0; p < 2; ++p) acc[u][p][0] = acc[u][p][1] = _mm512_setzero_si512();
        for (int64_t j = j0; j < std::min<int64_t>(J, j0 + CHUNK); ++j) {
            const uint8_t* entry = tab.bytes + ((m * G + g) * J + j) * TABLE;
            __m512i t[2][NT];
            for (int p = 0; p < 2; ++p)
                for (int i = 0; i < NT; ++i) t[p][i] = _mm512_load_si512(entry + (p * NT + i) * 64);
            for (int64_t u = 0; u < N_TILES; ++u) {
                const uint8_t* at = codes + ((t0 + u) * J + j) * 64;
                if (m == 0) prefetch_codes(at);
                const __m512i idx = _mm512_loadu_si512(at);
                const __mmask64 high = NT == 4 ? _mm512_movepi8_mask(idx) : 0;
                for (int p = 0; p < 2; ++p) {
                    const __m512i v = lookup(t[p], idx, high);
                    acc[u][p][0] = _mm512_add_epi16(acc[u][p][0], v);  // Σ (even + 256·odd) mod 2^16
                    acc[u][p][1] = _mm512_add_epi16(acc[u][p][1], _mm512_srli_epi16(v, 8));
                }
            }
        }
        for (int64_t u = 0; u < N_TILES; ++u)
            for (int p = 0; p < 2; ++p) {
                // Σ even < 2^16, so the wrapped word sums less 256·Σ odd give it exactly
                acc[u][p][0] = _mm512_sub_epi16(acc[u][p][0], _mm512_slli_epi16(acc[u][p][1], 8));
                for (int e = 0; e < 2; ++e)
                    for (int h = 0; h < 2; ++h) {
                        int32_t* dst = total[u][p][e] + 16 * h;
                        const __m512i wide = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(acc[u][p][e], h));
                        _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), wide));
                    }
            }
    }
    const float s1 = tab.s1[m][g], s2 = tab.s2[m][g], offset = 128.f * (float)J;
    for (int64_t u = 0; u < N_TILES; ++u)
        for (int e = 0; e < 2; ++e)
            for (int64_t i = 0; i < 32; ++i) {
                const int64_t n = (t0 + u) * 64 + 2 * i + e;
                if (n < N_OUT) out[n * M_ROWS + m] = s1 * ((float)total[u][0][e][i] - offset) + s2 * ((float)total[u][1][e][i] - offset);
            }
}

extern "C" void kernel(const float* x, const uint8_t* codes, const float* codebook, float* out) {
    Tables tab;
    table_scales(x, codebook, tab);
    // the codebook as [G][NT][4][D][16]: per 64 centroids, four vectors of 16 in pack order (zero past C)
    std::unique_ptr<float[], decltype(&std::free)> codebook_t((float*)std::aligned_alloc(64, G * NT * 64 * D * sizeof(float)), &std::free);
    for (int64_t g = 0; g < G; ++g)
        for (int64_t q = 0; q < NT; ++q)
            for (int64_t v = 0; v < 4; ++v)
                for (int64_t t = 0; t < D; ++t)
                    for (int64_t e = 0; e < 16; ++e) {
                        const int64_t c = q * 64 + pack_order(v, e);
                        codebook_t[(((g * NT + q) * 4 + v) * D + t) * 16 + e] = c < C ? codebook[(g * C + c) * D + t] : 0.f;
                    }
    const float* cbt = codebook_t.get();
    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < M_ROWS * G * J; ++i) build_table(x, cbt, tab, i / (G * J), i / J % G, i % J);
        // each thread an equal share of the tiles, in blocks of up to TB that stay within one codebook group
        const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t last = TILES * (id + 1) / threads;
        for (int64_t t0 = TILES * id / threads; t0 < last;) {
            const int64_t g = t0 / TILES_PER_GROUP;
            const int64_t tb = std::min(TB, std::min(last, (g + 1) * TILES_PER_GROUP) - t0);
            for (int64_t m = 0; m < M_ROWS; ++m) switch (tb) {
                case 4: tiles<4>(codes, tab, m, g, t0, out); break;
                case 3: tiles<3>(codes, tab, m, g, t0, out); break;
                case 2: tiles<2>(codes, tab, m, g, t0, out); break;
                default: tiles<1>(codes, tab, m, g, t0, out);
            }
            t0 += tb;
        }
    }
}
