// The small SIMD layer every hand-written kernel is written against, one implementation per tier
// (torchlite/inductor/tiers.py prepends `#define TIER n` and AVX_VNNI_EVEX):
//   1 avx512_vnni  64-byte vectors, vpdpbusd (unsigned x signed bytes)
//   2 avx_vnni     32-byte vectors, vpdpbusd on ymm (VEX on Alder Lake and later; EVEX where the CPU
//                  has AVX512-VNNI and VL instead, AVX_VNNI_EVEX = 1)
//   3 avx2         32-byte vectors, llama.cpp's vpmaddubsw / vpmaddwd dot products (signed x signed
//                  through the sign trick: |a| times b with a's sign)
//   4 portable     32-byte vectors as plain C++ arrays, vectorized by the compiler (NEON / sdot on
//                  ARM, SSE elsewhere)
//
// The integer dot product `dot(acc, a, b)` adds Σ a·b over each 4 bytes to a 32-bit lane: b is a
// signed byte in ±127; a's byte is read unsigned where BIAS = 128 (vpdpbusd: 0..255) and signed where
// BIAS = 0 (-128..127). Kernels shift their first operand into that range and correct the sums.
// `dot_small` is `dot` for first operands known to lie in 0..127 (read alike on every tier), which AVX2
// multiplies without the sign trick.
// Byte tables (`lut16`) hold 16 entries, repeated in every 16-byte lane of a vector.
#pragma once
#define TIER_AVX512_VNNI 1
#define TIER_AVX_VNNI 2
#define TIER_AVX2 3
#define TIER_PORTABLE 4

#if TIER == TIER_AVX512_VNNI
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")
#elif TIER == TIER_AVX_VNNI && AVX_VNNI_EVEX
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")
#elif TIER == TIER_AVX_VNNI
#pragma GCC target("avx2,fma,avxvnni")
#elif TIER == TIER_AVX2
#pragma GCC target("avx2,fma")
#elif TIER == TIER_PORTABLE
#pragma GCC optimize("tree-loop-vectorize")
#else
#error "unknown kernel tier"
#endif

#if TIER != TIER_PORTABLE
#include <immintrin.h>
#endif
#include <omp.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

namespace simd {

#if TIER == TIER_AVX512_VNNI
constexpr int W = 64;
constexpr int BIAS = 128;
using V8 = __m512i;
using V32 = __m512i;
using VF = __m512;
static inline V8 load8(const void* p) { return _mm512_loadu_si512(p); }
static inline V8 load8_n(const void* p, int64_t n) {
    return n >= 64 ? load8(p) : _mm512_maskz_loadu_epi8(n > 0 ? (__mmask64)((1ull << n) - 1) : 0, p);
}
static inline V8 splat8(uint8_t v) { return _mm512_set1_epi8((char)v); }
static inline V8 xor8(V8 a, V8 b) { return _mm512_xor_si512(a, b); }
static inline V8 low4(V8 v) { return _mm512_and_si512(v, splat8(0x0F)); }
static inline V8 high4(V8 v) { return _mm512_and_si512(_mm512_srli_epi16(v, 4), splat8(0x0F)); }
static inline V8 lut16(V8 table, V8 idx) { return _mm512_shuffle_epi8(table, idx); }
static inline V8 broadcast16(const void* p) { return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)p)); }
// per byte: (code & bit) != 0 ? if_set : if_clear
static inline V8 select(V8 code, V8 bit, V8 if_set, V8 if_clear) {
    return _mm512_mask_blend_epi8(_mm512_test_epi8_mask(code, bit), if_clear, if_set);
}
// one 64-weight step of 32 nibble bytes as [low nibbles | high nibbles]
static inline void nibble_step(const uint8_t* raw, V8* out) {
    __m256i r = _mm256_loadu_si256((const __m256i*)raw), low = _mm256_set1_epi8(0x0F);
    __m256i lo = _mm256_and_si256(r, low), hi = _mm256_and_si256(_mm256_srli_epi16(r, 4), low);
    out[0] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
static inline V32 zero32() { return _mm512_setzero_si512(); }
static inline V32 add32(V32 a, V32 b) { return _mm512_add_epi32(a, b); }
static inline V32 dot(V32 acc, V8 a, V8 b) { return _mm512_dpbusd_epi32(acc, a, b); }
static inline V32 dot_small(V32 acc, V8 a, V8 b) { return dot(acc, a, b); }
static inline int32_t sum32(V32 v) { return _mm512_reduce_add_epi32(v); }
static inline VF zerof() { return _mm512_setzero_ps(); }
static inline VF to_float(V32 v) { return _mm512_cvtepi32_ps(v); }
static inline VF fmadd(VF a, float b, VF c) { return _mm512_fmadd_ps(a, _mm512_set1_ps(b), c); }
static inline VF fmaddv(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
static inline VF splatf(float v) { return _mm512_set1_ps(v); }
static inline VF loadf(const float* p) { return _mm512_loadu_ps(p); }
static inline float sumf(VF v) { return _mm512_reduce_add_ps(v); }

#elif TIER == TIER_AVX_VNNI || TIER == TIER_AVX2
constexpr int W = 32;
constexpr int BIAS = TIER == TIER_AVX_VNNI ? 128 : 0;
using V8 = __m256i;
using V32 = __m256i;
using VF = __m256;
static inline V8 load8(const void* p) { return _mm256_loadu_si256((const __m256i*)p); }
static inline V8 load8_n(const void* p, int64_t n) {
    if (n >= 32) return load8(p);
    alignas(32) uint8_t tail[32] = {};
    if (n > 0) std::memcpy(tail, p, n);
    return _mm256_load_si256((const __m256i*)tail);
}
static inline V8 splat8(uint8_t v) { return _mm256_set1_epi8((char)v); }
static inline V8 xor8(V8 a, V8 b) { return _mm256_xor_si256(a, b); }
static inline V8 low4(V8 v) { return _mm256_and_si256(v, splat8(0x0F)); }
static inline V8 high4(V8 v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), splat8(0x0F)); }
static inline V8 lut16(V8 table, V8 idx) { return _mm256_shuffle_epi8(table, idx); }
static inline V8 broadcast16(const void* p) { return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)p)); }
static inline V8 select(V8 code, V8 bit, V8 if_set, V8 if_clear) {
    return _mm256_blendv_epi8(if_clear, if_set, _mm256_cmpeq_epi8(_mm256_and_si256(code, bit), bit));
}
static inline void nibble_step(const uint8_t* raw, V8* out) {
    V8 r = load8(raw);
    out[0] = low4(r);
    out[1] = high4(r);
}
static inline V32 zero32() { return _mm256_setzero_si256(); }
static inline V32 add32(V32 a, V32 b) { return _mm256_add_epi32(a, b); }
#if TIER == TIER_AVX_VNNI && AVX_VNNI_EVEX
static inline V32 dot(V32 acc, V8 a, V8 b) { return _mm256_dpbusd_epi32(acc, a, b); }
static inline V32 dot_small(V32 acc, V8 a, V8 b) { return dot(acc, a, b); }
#elif TIER == TIER_AVX_VNNI
static inline V32 dot(V32 acc, V8 a, V8 b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
static inline V32 dot_small(V32 acc, V8 a, V8 b) { return dot(acc, a, b); }
#else
// a (unsigned, at most 127) times b: pairs stay within 2·127·127 < 2^15, so vpmaddubsw never saturates
static inline V32 dot_small(V32 acc, V8 a, V8 b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
}
// |a| (at most 128) times b with a's sign (llama.cpp's sign trick): within 2·128·127 < 2^15 too
static inline V32 dot(V32 acc, V8 a, V8 b) { return dot_small(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)); }
#endif
static inline int32_t sum32(V32 v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}
static inline VF zerof() { return _mm256_setzero_ps(); }
static inline VF to_float(V32 v) { return _mm256_cvtepi32_ps(v); }
static inline VF fmadd(VF a, float b, VF c) { return _mm256_fmadd_ps(a, _mm256_set1_ps(b), c); }
static inline VF fmaddv(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
static inline VF splatf(float v) { return _mm256_set1_ps(v); }
static inline VF loadf(const float* p) { return _mm256_loadu_ps(p); }
static inline float sumf(VF v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

#else  // portable: fixed-length loops the compiler turns into vector code (omp simd forces it)
constexpr int W = 32;
constexpr int BIAS = 0;
struct V8 { int8_t b[W]; };
struct V32 { int32_t v[W / 4]; };
struct VF { float v[W / 4]; };
#define SIMD_LOOP _Pragma("omp simd")
static inline V8 load8(const void* p) { V8 r; std::memcpy(r.b, p, W); return r; }
static inline V8 load8_n(const void* p, int64_t n) {
    V8 r = {};
    if (n > 0) std::memcpy(r.b, p, std::min<int64_t>(n, W));
    return r;
}
static inline V8 splat8(uint8_t v) { V8 r; SIMD_LOOP for (int i = 0; i < W; ++i) r.b[i] = (int8_t)v; return r; }
static inline V8 xor8(V8 a, V8 b) { SIMD_LOOP for (int i = 0; i < W; ++i) a.b[i] ^= b.b[i]; return a; }
static inline V8 low4(V8 v) { SIMD_LOOP for (int i = 0; i < W; ++i) v.b[i] &= 0x0F; return v; }
static inline V8 high4(V8 v) { SIMD_LOOP for (int i = 0; i < W; ++i) v.b[i] = (int8_t)(((uint8_t)v.b[i] >> 4) & 0x0F); return v; }
static inline V8 lut16(V8 table, V8 idx) { V8 r; for (int i = 0; i < W; ++i) r.b[i] = table.b[idx.b[i] & 15]; return r; }
static inline V8 broadcast16(const void* p) { V8 r; for (int i = 0; i < W; i += 16) std::memcpy(r.b + i, p, 16); return r; }
static inline V8 select(V8 code, V8 bit, V8 if_set, V8 if_clear) {
    SIMD_LOOP for (int i = 0; i < W; ++i) if_clear.b[i] = (code.b[i] & bit.b[i]) ? if_set.b[i] : if_clear.b[i];
    return if_clear;
}
static inline void nibble_step(const uint8_t* raw, V8* out) {
    out[0] = low4(load8(raw));
    out[1] = high4(load8(raw));
}
static inline V32 zero32() { return V32{}; }
static inline V32 add32(V32 a, V32 b) { SIMD_LOOP for (int i = 0; i < W / 4; ++i) a.v[i] += b.v[i]; return a; }
static inline V32 dot(V32 acc, V8 a, V8 b) {
    int16_t prod[W];
    SIMD_LOOP for (int i = 0; i < W; ++i) prod[i] = (int16_t)(a.b[i] * b.b[i]);
    SIMD_LOOP for (int i = 0; i < W / 4; ++i)
        acc.v[i] += (int32_t)prod[4 * i] + prod[4 * i + 1] + prod[4 * i + 2] + prod[4 * i + 3];
    return acc;
}
static inline V32 dot_small(V32 acc, V8 a, V8 b) { return dot(acc, a, b); }
static inline int32_t sum32(V32 v) { int32_t s = 0; SIMD_LOOP for (int i = 0; i < W / 4; ++i) s += v.v[i]; return s; }
static inline VF zerof() { return VF{}; }
static inline VF to_float(V32 v) { VF r; SIMD_LOOP for (int i = 0; i < W / 4; ++i) r.v[i] = (float)v.v[i]; return r; }
static inline VF fmadd(VF a, float b, VF c) { SIMD_LOOP for (int i = 0; i < W / 4; ++i) c.v[i] += a.v[i] * b; return c; }
static inline VF fmaddv(VF a, VF b, VF c) { SIMD_LOOP for (int i = 0; i < W / 4; ++i) c.v[i] += a.v[i] * b.v[i]; return c; }
static inline VF splatf(float v) { VF r; SIMD_LOOP for (int i = 0; i < W / 4; ++i) r.v[i] = v; return r; }
static inline VF loadf(const float* p) { VF r; std::memcpy(r.v, p, sizeof(r.v)); return r; }
static inline float sumf(VF v) { float s = 0.f; for (int i = 0; i < W / 4; ++i) s += v.v[i]; return s; }
#endif

constexpr int REGISTERS = W == 64 ? 32 : 16;  // vector registers (portable: as for 128/256-bit ISAs)

}  // namespace simd

// Codes are requested into L2 (not L1) this far ahead of the step that reads them: L1's few fill
// buffers capped the loads in flight (1.2-1.3x over prefetching into L1, and over the hardware
// prefetcher alone, for int8, int4, log and VQ codes on AVX-512; harness runs, 2026-11-30).
constexpr int64_t PREFETCH_BYTES = 8192;
static inline void prefetch_codes(const void* at) { __builtin_prefetch((const char*)at + PREFETCH_BYTES, 0, 2); }
