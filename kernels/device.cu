#include "kernels/device.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <nccl.h>

namespace ds::kernels {

std::vector<DeviceInfo> list_cuda_devices() {
  std::vector<DeviceInfo> devices;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return devices;
  }
  // cudaSetDevice below (for free memory) changes the calling thread's device: restore it, or a
  // caller that lists devices mid-run would launch its next kernels on the last device.
  int current = 0;
  const bool have_current = cudaGetDevice(&current) == cudaSuccess;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.total_bytes = prop.totalGlobalMem;
    info.sm_major = prop.major;
    info.sm_minor = prop.minor;
    if (cudaSetDevice(i) == cudaSuccess) {
      size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) info.free_bytes = free_bytes;
    }
    devices.push_back(info);
  }
  if (have_current) cudaSetDevice(current);
  return devices;
}

std::string cuda_library_versions() {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  int nccl = 0;
  ncclGetVersion(&nccl);
  return "cudart " + std::to_string(runtime) + ", cublasLt " + std::to_string(cublasLtGetVersion()) +
         ", nccl " + std::to_string(nccl);
}

}  // namespace ds::kernels
