// Warpgroup-level tensor-core building blocks (sm_90a PTX; callers compile them only under
// __CUDA_ARCH_FEAT_SM90_ALL and fall back to mma.sync elsewhere): wgmma.mma_async m64nNk16 BF16 with fp32
// accumulation (and E4M3 m64nNk32, for W8A8), both operands read from shared memory by the tensor cores
// themselves (no ldmatrix into registers, one read of each operand per warpgroup instead of one per warp).
//
// Operands are K-major tiles of 128-byte rows (64 BF16 or 128 E4M3) in the 128-byte swizzle that
// mma::swizzled_chunk(row, chunk, 8) lays out (chunk c of row r at c ^ (r & 7)), starting at a
// 1024-byte aligned shared address: the hardware applies that XOR on address bits, so the tile's
// 8-row groups must sit on 1024-byte boundaries.
//
// Accumulator layout of m64nN (warp w of the warpgroup, g = lane / 4, c = lane % 4): register
// 4j + e holds row 16w + g + 8(e / 2), column 8j + 2c + (e % 2), i.e. per n8 column tile j the
// same fragment as mma.m16n8k16's C for the warp's 16 rows.
#pragma once

#include <cstdint>

namespace ds::kernels::wgmma {

// Matrix descriptor of a K-major, 128-byte-swizzled tile at shared address `addr` (the first k of
// the instruction; stepping k by 16 BF16 adds 32 bytes): the stride between 8-row groups is 1024
// bytes; the leading offset is unused for swizzled K-major tiles (1 by convention).
__device__ __forceinline__ uint64_t descriptor_k_major_sw128(uint32_t addr) {
  return uint64_t((addr & 0x3ffff) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// The descriptor of the same tile `bytes` further along k (a multiple of 16): the start address
// field holds addr >> 4 in 14 bits, and shared addresses (< 256 KB) leave it room, so stepping is one
// add instead of rebuilding the descriptor.
__device__ __forceinline__ uint64_t descriptor_advance(uint64_t descriptor, uint32_t bytes) {
  return descriptor + (bytes >> 4);
}

// Orders this thread's earlier register writes (of the accumulators) before the warpgroup's next
// wgmma reads them.
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Makes shared memory written by ordinary stores or cp.async (the generic proxy) visible to the
// tensor cores' reads (the async proxy); each writing thread calls it before the barrier that
// precedes the wgmma.
__device__ __forceinline__ void fence_shared_for_async_proxy() {
#if __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

#define DS_WGMMA_ACC8(i)                                                                                      \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])

#define DS_WGMMA_N8(INSTR, IMM_TAIL)                                                                           \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n" INSTR " {%0, %1, %2, %3}, %4, %5, p, 1, 1" IMM_TAIL \
               ";\n}\n"                                                                                        \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                \
               : "l"(a), "l"(b), "r"(int(accumulate)))
// One m64nNkK instruction: d (N/2 fp32 per thread) = A·Bᵀ + (accumulate ? d : 0). INSTR names shape
// and types; IMM_TAIL is what follows the scale immediates (BF16: the two transpose flags).
#define DS_WGMMA_N16(INSTR, IMM_TAIL)                                                 \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n" INSTR                     \
               " {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1" IMM_TAIL ";\n}\n" \
               : DS_WGMMA_ACC8(0)                                                     \
               : "l"(a), "l"(b), "r"(int(accumulate)))
#define DS_WGMMA_N32(INSTR, IMM_TAIL)                                                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n" INSTR                                                    \
               " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1" IMM_TAIL \
               ";\n}\n"                                                                                              \
               : DS_WGMMA_ACC8(0), DS_WGMMA_ACC8(8)                                                                  \
               : "l"(a), "l"(b), "r"(int(accumulate)))
#define DS_WGMMA_N64(INSTR, IMM_TAIL)                                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" INSTR                                            \
               " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                    \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, " \
               "p, 1, 1" IMM_TAIL ";\n}\n"                                                                   \
               : DS_WGMMA_ACC8(0), DS_WGMMA_ACC8(8), DS_WGMMA_ACC8(16), DS_WGMMA_ACC8(24)                    \
               : "l"(a), "l"(b), "r"(int(accumulate)))

#define DS_WGMMA_N80(INSTR, IMM_TAIL)                                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %42, 0;\n" INSTR                                            \
               " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                    \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "            \
               "%32, %33, %34, %35, %36, %37, %38, %39"                                                      \
               "}, %40, %41, p, 1, 1" IMM_TAIL ";\n}\n"                                                      \
               : DS_WGMMA_ACC8(0), DS_WGMMA_ACC8(8), DS_WGMMA_ACC8(16), DS_WGMMA_ACC8(24), DS_WGMMA_ACC8(32) \
               : "l"(a), "l"(b), "r"(int(accumulate)))
#define DS_WGMMA_N96(INSTR, IMM_TAIL)                                                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n" INSTR                                             \
               " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                     \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "             \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"               \
               "}, %48, %49, p, 1, 1" IMM_TAIL ";\n}\n"                                                       \
               : DS_WGMMA_ACC8(0), DS_WGMMA_ACC8(8), DS_WGMMA_ACC8(16), DS_WGMMA_ACC8(24), DS_WGMMA_ACC8(32), \
                 DS_WGMMA_ACC8(40)                                                                            \
               : "l"(a), "l"(b), "r"(int(accumulate)))

// d[64 × kN] += A[64 × 16] · B[kN × 16]ᵀ, BF16 A and B K-major in shared memory (see the descriptors).
template <int kN>
__device__ __forceinline__ void mma_bf16(float (&d)[kN / 2], uint64_t a, uint64_t b) {
  static_assert(kN == 16 || kN == 32 || kN == 64, "instantiated widths");
  constexpr bool accumulate = true;
  if constexpr (kN == 16) {
    DS_WGMMA_N16("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16", ", 0, 0");
  } else if constexpr (kN == 32) {
    DS_WGMMA_N32("wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16", ", 0, 0");
  } else {
    DS_WGMMA_N64("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16", ", 0, 0");
  }
}

// d[64 × kN] = A[64 × 32] · B[kN × 32]ᵀ (+ d where accumulate), E4M3 A and B K-major in shared
// memory: the same descriptors, 32 E4M3 of k per 32-byte step.
template <int kN>
__device__ __forceinline__ void mma_e4m3(float (&d)[kN / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(kN == 8 || kN == 16 || kN == 32 || kN == 64 || kN == 80 || kN == 96, "instantiated widths");
  if constexpr (kN == 8) {
    DS_WGMMA_N8("wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3", "");
  } else if constexpr (kN == 16) {
    DS_WGMMA_N16("wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3", "");
  } else if constexpr (kN == 32) {
    DS_WGMMA_N32("wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3", "");
  } else if constexpr (kN == 64) {
    DS_WGMMA_N64("wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3", "");
  } else if constexpr (kN == 80) {
    DS_WGMMA_N80("wgmma.mma_async.sync.aligned.m64n80k32.f32.e4m3.e4m3", "");
  } else {
    DS_WGMMA_N96("wgmma.mma_async.sync.aligned.m64n96k32.f32.e4m3.e4m3", "");
  }
}

#undef DS_WGMMA_N8
#undef DS_WGMMA_N16
#undef DS_WGMMA_N32
#undef DS_WGMMA_N64
#undef DS_WGMMA_N80
#undef DS_WGMMA_N96
#undef DS_WGMMA_ACC8

}  // namespace ds::kernels::wgmma
