// main() for GPU tests: without a usable GPU the whole binary reports itself skipped (exit 77,
// which CTest maps to "Skipped" through SKIP_RETURN_CODE) instead of failing or passing silently.
#include <gtest/gtest.h>

#include <cstdio>

#include "kernels/device.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  auto devices = ds::kernels::list_cuda_devices();
  if (devices.empty()) {
    std::printf("SKIPPED: no GPU visible to the CUDA runtime\n");
    return 77;
  }
  std::printf("running on cuda:0 %s (%s)\n", devices[0].name.c_str(), ds::kernels::cuda_library_versions().c_str());
  return RUN_ALL_TESTS();
}
