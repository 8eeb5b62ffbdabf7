// What the CUDA runtime can see. Safe to call on machines without a GPU or driver.
#pragma once

#include <string>
#include <vector>

namespace ds::kernels {

struct DeviceInfo {
  int index = 0;
  std::string name;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
  int sm_major = 0;
  int sm_minor = 0;
};

// Empty when there is no usable GPU (no driver, no device, or the runtime fails to start).
std::vector<DeviceInfo> list_cuda_devices();

// Versions of the linked libraries, e.g. "cudart 13000, cublasLt 130100, nccl 22803".
std::string cuda_library_versions();

}  // namespace ds::kernels
