// fused_qkvzba_split_reshape_cat on the GPU against the CPU reference, both layouts, BF16 and
// FP32, per-rank shapes of the published models, row-strided inputs, poisoned outputs.
#include <gtest/gtest.h>

#include "kernels/gdn_projection.h"
#include "tests/gpu/cuda_check.h"
#include "tests/gpu/gdn_test_util.h"

namespace ds::kernels {
namespace {

using gpu_test::DeviceBuffer;

struct SplitCase {
  GdnDims dims;
  int64_t T;
  QkvzLayout layout;
};

// Runs the split on the GPU in type T (bf16 or float) and on the CPU; outputs must be identical.
template <typename T>
void check_split(const SplitCase& c) {
  const GdnDims& d = c.dims;
  const int64_t qkvz_stride = d.conv_dim() + d.value_dim() + 16, ba_stride = 2 * d.num_v_heads + 3;
  const auto qkvz = gpu_test::random_bf16_values(c.T * qkvz_stride, 1);
  const auto ba = gpu_test::random_bf16_values(c.T * ba_stride, 2);
  std::vector<float> mixed(c.T * d.conv_dim()), z(c.T * d.value_dim()), b(c.T * d.num_v_heads), a(b.size());
  cpu::fused_qkvzba_split_reshape_cat(qkvz.data(), qkvz_stride, ba.data(), ba_stride, c.T, d, c.layout, mixed.data(),
                                      z.data(), b.data(), a.data());

  auto upload = [](const std::vector<float>& v) {
    if constexpr (std::is_same_v<T, float>)
      return v;
    else
      return gpu_test::to_bf16(v);
  };
  auto download = [](const DeviceBuffer<T>& buf) {
    if constexpr (std::is_same_v<T, float>)
      return buf.download();
    else
      return gpu_test::to_float(buf.download());
  };
  DeviceBuffer<T> d_qkvz(upload(qkvz)), d_ba(upload(ba));
  DeviceBuffer<T> d_mixed(mixed.size()), d_z(z.size()), d_b(b.size()), d_a(a.size());
  cuda::fused_qkvzba_split_reshape_cat(d_qkvz.get(), qkvz_stride, d_ba.get(), ba_stride, c.T, d, c.layout,
                                       d_mixed.get(), d_z.get(), d_b.get(), d_a.get(), nullptr);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(gpu_test::compare(download(d_mixed), mixed, 0, 0), "");
  EXPECT_EQ(gpu_test::compare(download(d_z), z, 0, 0), "");
  EXPECT_EQ(gpu_test::compare(download(d_b), b, 0, 0), "");
  EXPECT_EQ(gpu_test::compare(download(d_a), a, 0, 0), "");
}

TEST(GdnProjectionGpu, PublishedShapesBothLayouts) {
  for (const auto& nd : gpu_test::published_rank_dims()) {
    for (QkvzLayout layout : {QkvzLayout::kContiguous, QkvzLayout::kInterleavedGroups}) {
      for (int64_t T : {1, 7, 300}) {
        SCOPED_TRACE(std::string(nd.name) + " T=" + std::to_string(T) +
                     (layout == QkvzLayout::kContiguous ? " contiguous" : " interleaved"));
        check_split<bf16>({nd.dims, T, layout});
        check_split<float>({nd.dims, T, layout});
      }
    }
  }
}

TEST(GdnProjectionGpu, RatioEightAndOddDimsUseScalarPath) {
  // dk = 12 is not a multiple of the 16-byte vector: the kernel takes its element-wise path.
  for (QkvzLayout layout : {QkvzLayout::kContiguous, QkvzLayout::kInterleavedGroups}) {
    check_split<bf16>({{2, 16, 128, 128}, 33, layout});
    check_split<bf16>({{3, 9, 12, 20}, 17, layout});
    check_split<float>({{3, 9, 12, 20}, 17, layout});
  }
}

TEST(GdnProjectionGpu, LongPromptLargeShape) {
  check_split<bf16>({{16, 48, 128, 128}, 16384, QkvzLayout::kInterleavedGroups});
}

}  // namespace
}  // namespace ds::kernels
