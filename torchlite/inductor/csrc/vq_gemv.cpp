// Decode-shaped linear over vector-quantized weights in nibble codes (torchlite.numerics.vector, at most
// 16 centroids, two codes per byte) with byte lookups and integer dot products on every tier of simd.h,
// times the row scales. Byte codes take csrc/vq_lut.cpp.
// torchlite/inductor/vector.py prepends simd.h, activation_parts.h and the #defines: M_ROWS, N_OUT,
// K_IN, KP, J, D, C, G, GROUP_ROWS, PARTS, STATIC_X_SCALE.
//
// torchlite snaps every k-means codebook to an int8 grid: each centroid element is b·s_g with b an
// integer in ±127 and s_g a power of two per codebook. Per call, each codebook becomes D byte tables
// u = b + BIAS (one per centroid element, its 16 entries repeated in every lane); a step reads 128
// codes (64 bytes) and turns them into 2·D·(64 / W) vectors of weight bytes with byte shuffles, which
// simd::dot multiplies with the activations' int8 parts. So out[n, m] = s_n · s_g · (Σ_p s_p·Σ u·q_p
// − BIAS·Σ x̂), as in gemv.cpp (s_n: the row scale). The activations are stored per step in lookup
// order: for each code vector v and element c, the 64 inputs its weights meet.
// A codebook that is not on such a grid (not made by torchlite's k-means) gets an exact float loop.
#include <cmath>
using namespace simd;

constexpr int64_t CPS = 128;                           // codes per step (one 64-byte load)
constexpr int64_t VECS = 2;                            // code vectors per step (low and high nibbles)
constexpr int64_t VPS = 64 / W;                        // vectors per 64 bytes
constexpr int64_t STEPS = (J + CPS - 1) / CPS;
constexpr int64_t ROW_BYTES = (J + 1) / 2;
static_assert(C <= 16, "nibble codes");
constexpr int A = D % 2 == 0 ? 2 : 1;                  // accumulators per part (latency)
constexpr int64_t MC = M_ROWS % 2 == 0 ? 2 : 1;        // activation rows per pass over a weight row
static_assert(KP == STEPS * CPS * D, "activations are padded to whole steps");
static_assert(STEPS * VECS * D * VPS / A < 16000, "int32 accumulators could overflow");

// Per-call scratch (heap, so concurrent calls of one kernel do not share it).
struct Scratch {
    alignas(64) int8_t q[PARTS][M_ROWS * KP];  // activation parts in lookup order
    alignas(64) int8_t natural[PARTS][KP];     // one row's parts in input order
    alignas(64) float rest[KP];
    alignas(64) uint8_t table[G][D][64];       // u = b + BIAS per codebook, element, centroid % 16
    float scale[M_ROWS][PARTS];
    float sum[M_ROWS];                         // Σ x̂ per activation row
    float book_scale[G];
    bool on_grid[G];
};

// The smallest power of two s with top <= 127·s (1 for zero).
static float grid_step(float top) {
    if (!(top > 0.f)) return 1.f;
    float s = std::ldexp(1.f, std::ilogb(top) - 6);
    return top > 127.f * s ? 2.f * s : s;
}

static void build_tables(const float* codebook, Scratch& a) {
    for (int64_t g = 0; g < G; ++g) {
        const float* cb = codebook + g * C * D;
        float top = 0.f;
        for (int64_t i = 0; i < C * D; ++i) top = std::max(top, std::fabs(cb[i]));
        const float s = grid_step(top);
        bool exact = true;
        for (int64_t t = 0; t < D; ++t)
            for (int64_t c = 0; c < 64; ++c) {
                float b = c % 16 < C ? cb[(c % 16) * D + t] / s : 0.f;
                exact = exact && b == std::nearbyint(b);
                a.table[g][t][c] = (uint8_t)((int)std::nearbyint(b) + BIAS);
            }
        a.book_scale[g] = s;
        a.on_grid[g] = exact;
    }
}

static void quantize_activations(const float* x, Scratch& a) {
    for (int64_t m = 0; m < M_ROWS; ++m) {
        quantize_parts(x + m * K_IN, nullptr, a.rest, a.natural, a.scale[m]);
        for (int p = 0; p < PARTS; ++p)
            for (int64_t s = 0; s < STEPS; ++s)
                for (int64_t v = 0; v < VECS; ++v)
                    for (int64_t t = 0; t < D; ++t) {
                        int8_t* dst = a.q[p] + m * KP + ((s * VECS + v) * D + t) * 64;
                        for (int64_t i = 0; i < 64; ++i) {
                            const int64_t j = s * CPS + 2 * i + v;
                            dst[i] = a.natural[p][j * D + t];
                        }
                    }
        a.sum[m] = quantized_sum(a.natural, a.scale[m], 0, KP);
    }
}

// Exact float sums for a codebook off the int8 grid.
static void float_row(const float* x, const uint8_t* row, const float* cb, float* out) {
    for (int64_t m = 0; m < M_ROWS; ++m) {
        float total = 0.f;
        for (int64_t j = 0; j < J; ++j) {
            const int code = (row[j / 2] >> (4 * (j % 2))) & 15;
            for (int64_t t = 0; t < D; ++t) total += cb[code * D + t] * x[m * K_IN + j * D + t];
        }
        out[m] = total;
    }
}

extern "C" void kernel(const float* x, const uint8_t* codes, const float* codebook, const float* row_scale, float* out) {
    std::unique_ptr<Scratch> scratch(new Scratch);
    const Scratch& a = *scratch;
    build_tables(codebook, *scratch);
    quantize_activations(x, *scratch);
    #pragma omp parallel
    {
        const ThreadRows rows;
        for (int64_t r = 0; r < rows.count; ++r) {
            const int64_t n = rows[r];
            const int64_t g = n / GROUP_ROWS;
            const uint8_t* row = codes + n * ROW_BYTES;
            if (!a.on_grid[g]) {
                float sums[M_ROWS];
                float_row(x, row, codebook + g * C * D, sums);
                for (int64_t m = 0; m < M_ROWS; ++m) out[n * M_ROWS + m] = row_scale[n] * sums[m];
                continue;
            }
            V8 t[D];
            for (int64_t e = 0; e < D; ++e) t[e] = load8(a.table[g][e]);
            for (int64_t m0 = 0; m0 < M_ROWS; m0 += MC) {
                V32 acc[MC][PARTS][A];
                for (int64_t m = 0; m < MC; ++m)
                    for (int p = 0; p < PARTS; ++p)
                        for (int u = 0; u < A; ++u) acc[m][p][u] = zero32();
                for (int64_t s = 0; s < STEPS; ++s) {
                    if (m0 == 0) prefetch_codes(row + s * 64);  // one line per 64-byte step
                    for (int64_t h = 0; h < VPS; ++h) {
                        // the last row ends the buffer: no read past it
                        const V8 raw = load8_n(row + s * 64 + h * W, ROW_BYTES - s * 64 - h * W);
                        const V8 idx[VECS] = {low4(raw), high4(raw)};
                        for (int64_t v = 0; v < VECS; ++v)
                            for (int64_t e = 0; e < D; ++e) {
                                const V8 w = lut16(t[e], idx[v]);
                                for (int64_t m = 0; m < MC; ++m)
                                    for (int p = 0; p < PARTS; ++p) {
                                        const int8_t* xq = a.q[p] + (m0 + m) * KP + ((s * VECS + v) * D + e) * 64 + h * W;
                                        acc[m][p][e % A] = dot(acc[m][p][e % A], w, load8(xq));
                                    }
                            }
                    }
                }
                for (int64_t m = 0; m < MC; ++m) {
                    float sum = 0.f;
                    for (int p = 0; p < PARTS; ++p) {
                        V32 lanes = acc[m][p][0];
                        if (A == 2) lanes = add32(lanes, acc[m][p][A - 1]);
                        sum += a.scale[m0 + m][p] * (float)sum32(lanes);
                    }
                    out[n * M_ROWS + m0 + m] = row_scale[n] * a.book_scale[g] * (sum - (float)BIAS * a.sum[m0 + m]);
                }
            }
        }
    }
}
