// What the integer-dot-product kernels (gemv.cpp, vq_gemv.cpp, nm_gemv.cpp) share, prepended to their
// source after simd.h: activations as int8 parts and the order a thread reads its weight rows in.
// Needs the #defines K_IN (floats per activation row), KP (K_IN zero-padded), PARTS, STATIC_X_SCALE
// and N_OUT (weight rows).
//
// A row x is split into PARTS int8 parts, x ≈ Σ_p s_p·q_p, each part coding what the previous ones
// leave over (7 more bits each: two parts hold ~15 bits, three ~22, float32-like). One part with
// STATIC_X_SCALE uses the given scale; otherwise s_p = max|rest| / 127 (at least 1e-12), and
// q_p = clamp(round_half_even(rest / s_p), ±127): for one part exactly torchlite::qlinear_a8's
// per-token int8 activations. Plain loops the compiler vectorizes on every tier (O(K) per row, against
// the kernels' O(N·K)).
#include <cmath>

static_assert(KP % 64 == 0 && KP >= K_IN, "activation rows are padded to whole 64-byte steps");
static_assert(!STATIC_X_SCALE || PARTS == 1, "a static activation scale codes one part");

// One activation row x [K_IN] -> parts [PARTS][KP] (input order, zero-padded) and their scales;
// `rest` is KP floats of scratch.
static void quantize_parts(const float* x, const float* x_scale, float* rest, int8_t (*parts)[KP], float* scale) {
    #pragma omp simd
    for (int64_t k = 0; k < KP; ++k) rest[k] = k < K_IN ? x[k] : 0.f;
    for (int p = 0; p < PARTS; ++p) {
        float top = 0.f;
        #pragma omp simd reduction(max : top)
        for (int64_t k = 0; k < KP; ++k) top = std::max(top, std::fabs(rest[k]));
        const float sp = STATIC_X_SCALE ? x_scale[0] : std::max(top / 127.f, 1e-12f);
        int8_t* part = parts[p];
        #pragma omp simd
        for (int64_t k = 0; k < KP; ++k) {
            const float q = std::min(std::max(std::nearbyint(rest[k] / sp), -127.f), 127.f);
            rest[k] -= q * sp;
            part[k] = (int8_t)(int32_t)q;
        }
        scale[p] = sp;
    }
}

// Σ_p s_p · Σ_{k in [begin, end)} q_p[k]: the sum of the quantized activations over a range.
static inline float quantized_sum(int8_t (*parts)[KP], const float* scale, int64_t begin, int64_t end) {
    float sum = 0.f;
    for (int p = 0; p < PARTS; ++p) {
        int32_t total = 0;
        for (int64_t k = begin; k < end; ++k) total += parts[p][k];
        sum += scale[p] * (float)total;
    }
    return sum;
}

// Weight rows in memory order are one stream per thread; this thread's share of N_OUT rows read as two
// streams, its first and second halves alternating, ran 2-10 % faster (int8, int4, VQ; nothing for
// log 4-bit; harness runs on AVX-512, 2026-11-30). Call inside `#pragma omp parallel`.
struct ThreadRows {
    int64_t first, count, half;
    ThreadRows() {
        const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
        first = N_OUT * id / threads;
        count = N_OUT * (id + 1) / threads - first;
        half = (count + 1) / 2;
    }
    int64_t operator[](int64_t i) const { return first + (i % 2 ? half + i / 2 : i / 2); }
};
