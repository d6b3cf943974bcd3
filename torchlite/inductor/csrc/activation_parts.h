// What the VNNI kernels (vnni_gemv.cpp, vq_vnni.cpp, nm_vnni.cpp) share, prepended to their source after
// prefetch.h: activations as int8 parts and the order a thread reads its weight rows in.
// Needs the #defines K_IN (floats per activation row), KP (K_IN zero-padded), PARTS, STATIC_X_SCALE
// and N_OUT (weight rows).
//
// A row x is split into PARTS int8 parts, x ≈ Σ_p s_p·q_p, each part coding what the previous ones
// leave over (7 more bits each: two parts hold ~15 bits, three ~22, float32-like). One part with
// STATIC_X_SCALE uses the given scale; otherwise s_p = max|rest| / 127 (at least 1e-12), and
// q_p = clamp(round_half_even(rest / s_p), ±127): for one part exactly torchlite::qlinear_a8's
// per-token int8 activations.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")
#include <immintrin.h>
#include <omp.h>
#include <algorithm>
#include <cstdint>
#include <memory>

static_assert(KP % 64 == 0 && KP >= K_IN, "activation rows are padded to whole 64-byte vectors");
static_assert(!STATIC_X_SCALE || PARTS == 1, "a static activation scale codes one part");

static inline __mmask16 tail_mask(int64_t k) {
    int64_t left = K_IN - k;
    return left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
}

static inline __m512 round_even(__m512 v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

// One activation row x [K_IN] -> parts [PARTS][KP] (input order, zero-padded) and their scales;
// `rest` is KP floats of scratch (64-byte aligned).
static void quantize_parts(const float* x, const float* x_scale, float* rest, int8_t (*parts)[KP], float* scale) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t k = 0; k < KP; k += 16) _mm512_store_ps(rest + k, _mm512_maskz_loadu_ps(tail_mask(k), x + k));
    for (int p = 0; p < PARTS; ++p) {
        __m512 amax = _mm512_setzero_ps();
        for (int64_t k = 0; k < KP; k += 16) amax = _mm512_max_ps(amax, _mm512_andnot_ps(sign, _mm512_load_ps(rest + k)));
        float top = _mm512_reduce_max_ps(amax), sp = STATIC_X_SCALE ? x_scale[0] : std::max(top / 127.f, 1e-12f);
        const __m512 spv = _mm512_set1_ps(sp), qmax = _mm512_set1_ps(127.f), qmin = _mm512_set1_ps(-127.f);
        for (int64_t k = 0; k < KP; k += 16) {
            __m512 v = _mm512_load_ps(rest + k);
            __m512 q = _mm512_min_ps(_mm512_max_ps(round_even(_mm512_div_ps(v, spv)), qmin), qmax);
            _mm512_store_ps(rest + k, _mm512_fnmadd_ps(q, spv, v));
            _mm_store_si128((__m128i*)(parts[p] + k), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(q)));
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
// log 4-bit; harness runs, 2026-11-30). Call inside `#pragma omp parallel`.
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
