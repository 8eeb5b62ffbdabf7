// Warp-level tensor-core building blocks (sm_80+ PTX, used on sm_90a): ldmatrix, mma.sync
// m16n8k16 BF16 with fp32 accumulation, cp.async, and the XOR-swizzled shared-memory tile layout
// they read. Shared by attention.cu and the FP8 GEMM in gemm.cu.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, c = lane % 4):
//   A 16×16 (row-major): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..), a3 = (g+8, 2c+8..)
//   B 16×8  (k × n):     b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g)
//   C 16×8  fp32:        c0,c1 = (g, 2c..2c+1), c2,c3 = (g+8, 2c..2c+1)
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace ds::kernels::mma {

// Tiles are rows of `chunks_per_row` 16-byte chunks (8 bf16). Chunk c of row r is stored at chunk
// c ^ (r & 7) of that row, so the 8 rows an ldmatrix phase reads hit 8 different bank groups.
// chunks_per_row must be a multiple of 8.
__device__ __forceinline__ int swizzled_chunk(int row, int chunk, int chunks_per_row) {
  return row * chunks_per_row + (chunk ^ (row & 7));
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// From a shared-memory address already converted (loops that step through a tile add compile-time
// offsets to one per-lane address instead of converting pointers each time), or from a pointer.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix_x4(r, smem_address(p)); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  ldmatrix_x4_trans(r, smem_address(p));
}

// c += a · b
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte global -> shared copy; when !valid the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
// 4-byte global -> shared copy (through L1: for small values many blocks read).
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_address(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Waits until at most `pending` of this thread's newest cp.async groups are still in flight, for a
// `pending` known only at run time (0 <= pending; values above kMax wait for kMax).
template <int kMax>
__device__ __forceinline__ void cp_async_wait_at_most(int pending) {
  if constexpr (kMax == 0) {
    cp_async_wait<0>();
  } else if (pending >= kMax) {
    cp_async_wait<kMax>();
  } else {
    cp_async_wait_at_most<kMax - 1>(pending);
  }
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ldmatrix source address of lane `lane` for an A fragment (16 rows × 16 cols at row0, chunk0) of a
// swizzled tile, and equally for a trans-loaded B fragment pair (16 k-rows × two 8-wide n-tiles).
__device__ __forceinline__ int a_fragment_chunk(int lane, int row0, int chunk0, int chunks_per_row) {
  return swizzled_chunk(row0 + (lane & 15), chunk0 + (lane >> 4), chunks_per_row);
}

// ldmatrix (non-trans) address for B fragments of two n-tiles (rows n0..n0+15 of an [n][k] tile)
// at one 16-wide k-step: r[0], r[1] = (b0, b1) of n-tile n0; r[2], r[3] = those of n0 + 8.
__device__ __forceinline__ int b_fragment_chunk(int lane, int n0, int chunk0, int chunks_per_row) {
  return swizzled_chunk(n0 + (lane & 7) + ((lane >> 4) << 3), chunk0 + ((lane >> 3) & 1), chunks_per_row);
}

// A lane's ldmatrix addresses into a swizzled tile (chunks_per_row a multiple of 8), for fragments
// whose first row is a multiple of 8 and whose k-step `step` covers chunks 2·step and 2·step + 1:
// the swizzle's XOR then depends only on the lane and step % 4, so the four chunk offsets are
// computed once and each fragment's address is one of them plus compile-time offsets (in unrolled
// loops, no XOR and shifts per ldmatrix: in the attention kernel they had been a third of a key
// tile's instructions).
struct FragmentLanes {
  uint32_t row_base;         // shared address of the lane's row in a fragment at row 0
  uint32_t chunk_offset[4];  // bytes: ((2·(step % 4) + half) ^ (row & 7)) chunks
};

__device__ __forceinline__ FragmentLanes fragment_lanes(uint32_t tile, int lane_row, int half, int chunks_per_row) {
  FragmentLanes f;
  f.row_base = tile + uint32_t(lane_row * chunks_per_row * 16);
#pragma unroll
  for (int k = 0; k < 4; ++k) f.chunk_offset[k] = uint32_t(((2 * k + half) ^ (lane_row & 7)) * 16);
  return f;
}
// The lanes of a_fragment_chunk (A fragments; also trans-loaded B fragment pairs).
__device__ __forceinline__ FragmentLanes a_fragment_lanes(uint32_t tile, int lane, int chunks_per_row) {
  return fragment_lanes(tile, lane & 15, lane >> 4, chunks_per_row);
}
// The lanes of b_fragment_chunk (two n-tiles of B fragments).
__device__ __forceinline__ FragmentLanes b_fragment_lanes(uint32_t tile, int lane, int chunks_per_row) {
  return fragment_lanes(tile, (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1, chunks_per_row);
}
// The address of the fragment at rows row0.. (a multiple of 8) and k-step `step`, plus `extra` bytes.
__device__ __forceinline__ uint32_t fragment_address(const FragmentLanes& f, int row0, int step, int chunks_per_row,
                                                     uint32_t extra = 0) {
  return f.row_base + extra + uint32_t((row0 * chunks_per_row + 8 * (step >> 2)) * 16) + f.chunk_offset[step & 3];
}

}  // namespace ds::kernels::mma
