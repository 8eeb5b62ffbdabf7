#include "kernels/gdn_projection.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "tests/unit/kernels/gdn_test_util.h"

namespace ds::kernels {
namespace {

// The logical tensors of one token batch and their packing into the checkpoint layouts, written
// from the layout descriptions (Qwen3.5: stacked [q|k|v|z], [b|a]; Qwen3-Next: per key-head group
// [q_g|k_g|v_g|z_g], [b_g|a_g]) independently of the kernel's offset helper.
struct Logical {
  GdnDims d;
  int64_t T;
  std::vector<float> q, k, v, z, b, a;  // q,k [T][Hk][dk]; v,z [T][Hv][dv]; b,a [T][Hv]

  Logical(GdnDims dims, int64_t tokens) : d(dims), T(tokens) {
    q = test::random_vector(T * d.key_dim(), 1);
    k = test::random_vector(T * d.key_dim(), 2);
    v = test::random_vector(T * d.value_dim(), 3);
    z = test::random_vector(T * d.value_dim(), 4);
    b = test::random_vector(T * d.num_v_heads, 5);
    a = test::random_vector(T * d.num_v_heads, 6);
  }

  // Row t of the qkvz GEMM output, element `col`, written by walking the layout in order.
  std::vector<float> pack_qkvz(QkvzLayout layout, int64_t stride) const {
    std::vector<float> out(T * stride, -999.f);
    const int64_t dk = d.head_k_dim, dv = d.head_v_dim, r = d.ratio();
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> row;
      auto put_q = [&](int64_t kh) {
        for (int64_t i = 0; i < dk; ++i) row.push_back(q[(t * d.num_k_heads + kh) * dk + i]);
      };
      auto put_k = [&](int64_t kh) {
        for (int64_t i = 0; i < dk; ++i) row.push_back(k[(t * d.num_k_heads + kh) * dk + i]);
      };
      auto put_v = [&](int64_t h) {
        for (int64_t i = 0; i < dv; ++i) row.push_back(v[(t * d.num_v_heads + h) * dv + i]);
      };
      auto put_z = [&](int64_t h) {
        for (int64_t i = 0; i < dv; ++i) row.push_back(z[(t * d.num_v_heads + h) * dv + i]);
      };
      if (layout == QkvzLayout::kContiguous) {
        for (int64_t kh = 0; kh < d.num_k_heads; ++kh) put_q(kh);
        for (int64_t kh = 0; kh < d.num_k_heads; ++kh) put_k(kh);
        for (int64_t h = 0; h < d.num_v_heads; ++h) put_v(h);
        for (int64_t h = 0; h < d.num_v_heads; ++h) put_z(h);
      } else {
        for (int64_t g = 0; g < d.num_k_heads; ++g) {
          put_q(g);
          put_k(g);
          for (int64_t j = 0; j < r; ++j) put_v(g * r + j);
          for (int64_t j = 0; j < r; ++j) put_z(g * r + j);
        }
      }
      std::copy(row.begin(), row.end(), out.begin() + t * stride);
    }
    return out;
  }

  std::vector<float> pack_ba(QkvzLayout layout, int64_t stride) const {
    std::vector<float> out(T * stride, -999.f);
    const int64_t r = d.ratio(), Hv = d.num_v_heads;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> row;
      if (layout == QkvzLayout::kContiguous) {
        for (int64_t h = 0; h < Hv; ++h) row.push_back(b[t * Hv + h]);
        for (int64_t h = 0; h < Hv; ++h) row.push_back(a[t * Hv + h]);
      } else {
        for (int64_t g = 0; g < d.num_k_heads; ++g) {
          for (int64_t j = 0; j < r; ++j) row.push_back(b[t * Hv + g * r + j]);
          for (int64_t j = 0; j < r; ++j) row.push_back(a[t * Hv + g * r + j]);
        }
      }
      std::copy(row.begin(), row.end(), out.begin() + t * stride);
    }
    return out;
  }
};

class SplitTest : public testing::TestWithParam<std::tuple<int64_t, int64_t, QkvzLayout>> {};

TEST_P(SplitTest, MatchesLogicalTensors) {
  const auto [hk, ratio, layout] = GetParam();
  const GdnDims d{hk, hk * ratio, 8, 4};
  const int64_t T = 5, qkvz_stride = d.conv_dim() + d.value_dim() + 3, ba_stride = 2 * d.num_v_heads + 1;
  const Logical in(d, T);
  const auto qkvz = in.pack_qkvz(layout, qkvz_stride);
  const auto ba = in.pack_ba(layout, ba_stride);
  std::vector<float> mixed(T * d.conv_dim(), NAN), z(T * d.value_dim(), NAN), b(T * d.num_v_heads, NAN),
      a(T * d.num_v_heads, NAN);
  cpu::fused_qkvzba_split_reshape_cat(qkvz.data(), qkvz_stride, ba.data(), ba_stride, T, d, layout, mixed.data(),
                                      z.data(), b.data(), a.data());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < d.key_dim(); ++i) {
      ASSERT_EQ(mixed[t * d.conv_dim() + i], in.q[t * d.key_dim() + i]) << "q t=" << t << " i=" << i;
      ASSERT_EQ(mixed[t * d.conv_dim() + d.key_dim() + i], in.k[t * d.key_dim() + i]) << "k t=" << t << " i=" << i;
    }
    for (int64_t i = 0; i < d.value_dim(); ++i) {
      ASSERT_EQ(mixed[t * d.conv_dim() + 2 * d.key_dim() + i], in.v[t * d.value_dim() + i]) << "v t=" << t;
    }
  }
  EXPECT_EQ(z, in.z);
  EXPECT_EQ(b, in.b);
  EXPECT_EQ(a, in.a);
}

INSTANTIATE_TEST_SUITE_P(Ratios, SplitTest,
                         testing::Combine(testing::Values(1, 2, 4), testing::Values(1, 2, 3, 4, 8),
                                          testing::Values(QkvzLayout::kContiguous, QkvzLayout::kInterleavedGroups)));

TEST(Split, MergedLayoutOffsets) {
  // The zero-copy form: the merged row is [q|k|v|z|b|a], each part right after the previous.
  const GdnDims d{2, 6, 8, 4};
  EXPECT_EQ(d.z_offset(), 2 * 16 + 24);
  EXPECT_EQ(d.b_offset(), d.z_offset() + 24);
  EXPECT_EQ(d.a_offset(), d.b_offset() + 6);
  EXPECT_EQ(d.merged_width(), d.a_offset() + 6);
}

TEST(Split, RejectsBadStrideAndRatio) {
  const GdnDims d{2, 4, 8, 4};
  std::vector<float> buf(1000);
  EXPECT_THROW(cpu::fused_qkvzba_split_reshape_cat(buf.data(), 10, buf.data(), 8, 1, d, QkvzLayout::kContiguous,
                                                   buf.data(), buf.data(), buf.data(), buf.data()),
               std::invalid_argument);
  const GdnDims bad{3, 4, 8, 4};
  EXPECT_THROW(cpu::fused_qkvzba_split_reshape_cat(buf.data(), 100, buf.data(), 8, 1, bad, QkvzLayout::kContiguous,
                                                   buf.data(), buf.data(), buf.data(), buf.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace ds::kernels
