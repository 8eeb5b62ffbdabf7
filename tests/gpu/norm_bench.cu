// Memory-bound elementwise kernels at Qwen3.5-9B sizes (H 4096): fused add + RMSNorm, SiLU-and-mul
// (I 12288), and the fused q/k norm + RoPE, as GB/s against the card's copy ceiling (measured at start).
#include <cstdio>
#include <vector>

#include "kernels/activation.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "tests/gpu/kernels_bench_util.h"

using namespace ds::kernels;

int main() {
  const int64_t H = 4096, I = 12288, Hq = 16, Hkv = 4, D = 256;
  std::printf("%-28s %6s | %9s %9s %6s\n", "kernel", "T", "us", "GB/s", "%copy");
  for (int64_t T : {64, 1024, 8192}) {
    bf16* x = bench::device_alloc<bf16>(size_t(T * 2 * I));
    bf16* r = bench::device_alloc<bf16>(size_t(T * H));
    bf16* y = bench::device_alloc<bf16>(size_t(T * 2 * I));
    bf16* w = bench::device_alloc<bf16>(static_cast<size_t>(H));
    bench::fill_random_bf16(x, size_t(T * 2 * I), 1.f, 1);
    bench::fill_random_bf16(r, size_t(T * H), 1.f, 2);
    bench::fill_random_bf16(w, size_t(H), 0.1f, 3);
    auto report = [&](const char* name, double us, double bytes) {
      std::printf("%-28s %6ld | %9.1f %9.0f %5.1f%%\n", name, long(T), us, bytes / us * 1e-3,
                  bytes / us * 1e-3 / bench::copy_gbs() * 100);
    };
    double us = bench::median_us([&](int) { cuda::add_rms_norm(r, x, H, w, y, H, T, H, 1e-6f, nullptr); });
    report("add_rms_norm", us, double(T * H) * 2 * 4);  // read x, r; write r, y
    us = bench::median_us([&](int) { cuda::silu_and_mul(x, 2 * I, y, I, T, I, nullptr); });
    report("silu_and_mul", us, double(T * I) * 2 * 3);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(t);
    int32_t* dpos = bench::device_alloc<int32_t>(static_cast<size_t>(T));
    bench::check(cudaMemcpy(dpos, pos.data(), size_t(T) * 4, cudaMemcpyHostToDevice), "positions");
    const RopeParams rope{D, 64, 1e7f};
    us = bench::median_us([&](int) {
      cuda::qk_norm_rope(x, Hq * 2 * D, x + Hq * 2 * D, Hq * 2 * D, w, w, 1e-6f, dpos, T, Hq, Hkv, rope, y,
                         y + T * Hq * D, nullptr);
    });
    report("qk_norm_rope", us, double(T * (Hq + Hkv) * D) * 2 * 2);
    for (void* p : {static_cast<void*>(x), static_cast<void*>(r), static_cast<void*>(y), static_cast<void*>(w),
                    static_cast<void*>(dpos)}) {
      cudaFree(p);
    }
  }
  return 0;
}
