// How far ahead every hand-written kernel requests its codes, prepended to their source.
//
// Codes are requested into L2 (not L1) this far ahead of the step that reads them: L1's few fill
// buffers capped the loads in flight (1.2-1.3x over prefetching into L1, and over the hardware
// prefetcher alone, for int8, int4, log and VQ codes; harness runs, 2026-11-30).
#include <immintrin.h>
#include <cstdint>

constexpr int64_t PREFETCH_BYTES = 8192;
static inline void prefetch_line(const uint8_t* at) { _mm_prefetch((const char*)at, _MM_HINT_T1); }
static inline void prefetch_codes(const uint8_t* at) { prefetch_line(at + PREFETCH_BYTES); }
