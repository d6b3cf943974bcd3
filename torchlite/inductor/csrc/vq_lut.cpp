// Decode-shaped linear over vector-quantized weights in byte codes (torchlite.quant.vector, 17..256
// centroids) by table lookups of dot products, times the row scales.
// torchlite/inductor/vector.py prepends simd.h (the avx512_vnni tier: TIER 1) and the #defines: M_ROWS, N_OUT, J (sub-vectors per row), D, C, G,
// GROUP_ROWS (a multiple of 64, or N_OUT).
//
// Per call and activation row, every sub-vector position j gets a table of the dot products of its D
// inputs with every centroid, P[j, c] = Σ_t x[j·D + t]·codebook[c, t], in steps of S1 / 256 (S1 from a
// bound on |P|, so that the steps fit 16 bits), held as two byte parts: ~15 bits. The codes are stored
// in 64-row tiles ([ceil(N/64), J, 64]: the 64 rows' codes of one position are one 64-byte vector), so
// one in-register lookup (vpermb / vpermi2b, two merge-masked ones for 256 entries) serves the 64 rows
// at once: out[n] = s_n · Σ_j P[j, code[n, j]] (s_n: the row scale), whatever D is. Sums run in 16-bit
// lanes for 256 positions at a time (the word sums wrap; the odd rows' bytes are summed apart, which
// recovers the even rows' sums exactly), then widen to 32 bits.
//
// Each thread takes a share of the positions for every tile and builds only their tables, so it never
// reads a table another core wrote (fetching those from the other core's cache cost more than building
// them: harness, 2026-12-01); the threads' sums are added at the end.
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
constexpr int64_t TB = 4;                              // tiles sharing one table load (2 was slower, 6 and 8 no faster)
constexpr int64_t CHUNK = 256;                         // positions per 16-bit sum (255 · 256 < 2^16)
static_assert(G == 1 || GROUP_ROWS % 64 == 0, "codebook groups are whole tiles");

struct Tables {
    uint8_t* bytes;  // [M_ROWS][G][J][2][NT * 64]
    float step[M_ROWS][G];  // S1
    Tables() : bytes((uint8_t*)std::aligned_alloc(64, M_ROWS * G * J * TABLE)) {}
    ~Tables() { std::free(bytes); }
};

// S1 per activation row and codebook, from a bound on |P|: max_j Σ_t |x_jt| · max_c |codebook[c, t]|.
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
            tab.step[m][g] = std::max(bound, 1e-30f) / 127.f;
        }
    }
}

// vpermt2b indices that give byte b of a table part: the high (part 0) or low (part 1) byte of the word
// that packs_epi16(a, b) would put at b (per 128-bit lane: eight words of a, then eight of b).
static inline __m512i part_bytes(int high) {
    alignas(64) uint8_t idx[64];
    for (int b = 0; b < 64; ++b) idx[b] = (b % 16 < 8 ? 0 : 64) + 2 * (8 * (b / 16) + b % 8) + high;
    return _mm512_load_si512(idx);
}

// Both parts of position j's table for activation row m and codebook g: Q = round(P · 256 / S1), an
// int16 (|P| <= 127·S1), split into its high byte (signed, stored + 128) and its low byte (unsigned).
// codebook_t holds each group of 64 centroids as four 16-float vectors in pack order (`pack_order`),
// so that the packs leave the words in centroid order per 128-bit lane.
static void build_table(const float* x, const float* codebook_t, const Tables& tab, int64_t m, int64_t g, int64_t j,
                        __m512i hi_idx, __m512i lo_idx) {
    const float to_q = 256.f / tab.step[m][g];
    __m512 xs[D];
    for (int64_t t = 0; t < D; ++t) xs[t] = _mm512_set1_ps(x[m * J * D + j * D + t] * to_q);
    uint8_t* out = tab.bytes + ((m * G + g) * J + j) * TABLE;
    for (int64_t q = 0; q < NT; ++q) {
        __m512i words[4];
        for (int64_t v = 0; v < 4; ++v) {
            const float* cb = codebook_t + ((g * NT + q) * 4 + v) * D * 16;
            __m512 p = _mm512_mul_ps(xs[0], _mm512_load_ps(cb));
            for (int64_t t = 1; t < D; ++t) p = _mm512_fmadd_ps(xs[t], _mm512_load_ps(cb + t * 16), p);
            words[v] = _mm512_cvtps_epi32(p);  // rounds to nearest even
        }
        const __m512i a = _mm512_packs_epi32(words[0], words[1]), b = _mm512_packs_epi32(words[2], words[3]);
        _mm512_store_si512(out + q * 64, _mm512_xor_si512(_mm512_permutex2var_epi8(a, hi_idx, b), _mm512_set1_epi8((char)0x80)));
        _mm512_store_si512(out + (NT + q) * 64, _mm512_permutex2var_epi8(a, lo_idx, b));
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

// Sums over positions [jb, je) of N_TILES tiles (from tile t0, codebook g) for activation row m into out.
template <int64_t N_TILES>
static void tiles(const uint8_t* codes, const Tables& tab, int64_t m, int64_t g, int64_t t0, int64_t jb, int64_t je, float* out) {
    constexpr int64_t AHEAD = PREFETCH_BYTES / 64;  // positions
    int32_t total[N_TILES][2][2][32] = {};  // [tile][part][even / odd row][row pair]
    for (int64_t j0 = jb; j0 < je; j0 += CHUNK) {
        __m512i acc[N_TILES][2][2];
        for (int64_t u = 0; u < N_TILES; ++u)
            for (int p = 0; p < 2; ++p) acc[u][p][0] = acc[u][p][1] = _mm512_setzero_si512();
        for (int64_t j = j0; j < std::min(je, j0 + CHUNK); ++j) {
            const uint8_t* entry = tab.bytes + ((m * G + g) * J + j) * TABLE;
            __m512i t[2][NT];
            for (int p = 0; p < 2; ++p)
                for (int i = 0; i < NT; ++i) t[p][i] = _mm512_load_si512(entry + (p * NT + i) * 64);
            for (int64_t u = 0; u < N_TILES; ++u) {
                if (m == 0) {  // this stream's codes AHEAD positions on, in this block or the next
                    const int64_t ahead = j + AHEAD, tile = ahead < je ? t0 + u : t0 + N_TILES + u;
                    if (tile < TILES) __builtin_prefetch(codes + (tile * J + (ahead < je ? ahead : jb + ahead - je)) * 64, 0, 2);
                }
                const __m512i idx = _mm512_loadu_si512(codes + ((t0 + u) * J + j) * 64);
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
    const float s1 = tab.step[m][g], s2 = s1 / 256.f, offset = 128.f * (float)(je - jb);
    for (int64_t u = 0; u < N_TILES; ++u)
        for (int e = 0; e < 2; ++e)
            for (int64_t i = 0; i < 32; ++i) {
                const int64_t n = (t0 + u) * 64 + 2 * i + e;
                if (n < N_OUT) out[n * M_ROWS + m] = s1 * ((float)total[u][0][e][i] - offset) + s2 * (float)total[u][1][e][i];
            }
}

extern "C" void kernel(const float* x, const uint8_t* codes, const float* codebook, const float* row_scale, float* out) {
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
    // per thread, the sums over its positions (float32 [N_OUT][M_ROWS]), added up at the end
    const int64_t partial_floats = (omp_get_max_threads() * N_OUT * M_ROWS + 15) / 16 * 16;  // whole 64-byte lines
    std::unique_ptr<float[], decltype(&std::free)> partial((float*)std::aligned_alloc(64, partial_floats * sizeof(float)), &std::free);
    #pragma omp parallel
    {
        // each thread a share of the positions, for every tile: it reads only the tables it built
        const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t jb = J * id / threads, je = J * (id + 1) / threads;
        const __m512i hi_idx = part_bytes(1), lo_idx = part_bytes(0);
        for (int64_t m = 0; m < M_ROWS; ++m)
            for (int64_t g = 0; g < G; ++g)
                for (int64_t j = jb; j < je; ++j) build_table(x, cbt, tab, m, g, j, hi_idx, lo_idx);
        float* mine = partial.get() + id * N_OUT * M_ROWS;
        // blocks of up to TB tiles that stay within one codebook group
        for (int64_t t0 = 0; t0 < TILES;) {
            const int64_t g = t0 / TILES_PER_GROUP;
            const int64_t tb = std::min(TB, std::min(TILES, (g + 1) * TILES_PER_GROUP) - t0);
            for (int64_t m = 0; m < M_ROWS; ++m) switch (tb) {
                case 4: tiles<4>(codes, tab, m, g, t0, jb, je, mine); break;
                case 3: tiles<3>(codes, tab, m, g, t0, jb, je, mine); break;
                case 2: tiles<2>(codes, tab, m, g, t0, jb, je, mine); break;
                default: tiles<1>(codes, tab, m, g, t0, jb, je, mine);
            }
            t0 += tb;
        }
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < N_OUT * M_ROWS; ++i) {
            float sum = 0.f;
            for (int64_t k = 0; k < threads; ++k) sum += partial[k * N_OUT * M_ROWS + i];
            out[i] = row_scale[i / M_ROWS] * sum;
        }
    }
}
