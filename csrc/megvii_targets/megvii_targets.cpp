// megvii_targets and gaussian_targets: input checks, CPU kernels, and the launch of the CUDA kernels.
//
// megvii_targets reproduces rsn_fast/ops/megvii_targets/reference.py: a one-hot at (floor y, floor x) blurred by
// cv2.GaussianBlur((k, k), 0) (reflect-101 border) is the outer product col[y] * row[x] of two 1-D responses,
// each built in float64 (taps folded with reflect-101, summed in tap order) and cast to float32 as the reference
// does; then rows are scaled by 255 / (max row * max col) ("global_max") or 255 / (row[x] * col[y]) ("center").
// gaussian_targets is MMPose's MSRAHeatmap target (unbiased=False): exp(-((X-mx)^2 + (Y-my)^2) / (2 sigma^2)) on
// the 3-sigma patch around m = trunc(keypoint + 0.5), in float32, peak 1.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/checks.h"
#include "decode_heatmaps/cpu_parallel.h"
#include "decode_heatmaps/decode_math.h"
#include "megvii_targets/targets_math.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"

#include "megvii_targets/megvii_targets_cuda.h"
#endif

#ifndef RSN_FAST_OP_LIBRARY
#define RSN_FAST_OP_LIBRARY rsn_fast
#endif

namespace rsn_fast {
namespace {

constexpr const char* kMegvii = "rsn_fast::megvii_targets";
constexpr const char* kGauss = "rsn_fast::gaussian_targets";

void check_keypoints(const at::Tensor& kp, const at::Tensor& weights, const char* op) {
  RSN_CHECK_ARG(kp.dim() == 3 && kp.size(2) == 2, op, "keypoints", "must have shape (N, K, 2), got ", kp.sizes());
  RSN_CHECK_ARG(at::isFloatingType(kp.scalar_type()), op, "keypoints", "must be floating point, got ",
                kp.scalar_type());
  RSN_CHECK_ARG(weights.dim() == 2 && weights.size(0) == kp.size(0) && weights.size(1) == kp.size(1), op,
                "weights", "must have shape (", kp.size(0), ", ", kp.size(1), "), got ", weights.sizes());
  check_same_device(weights, kp, op, "weights", "keypoints");
}

// A fresh CPU output of tens of MB costs more in 4 KiB page faults than in writing it (measured here: 17 ms of
// faults vs 1.3 ms of stores for 40 MB). Asking for transparent huge pages on the untouched buffer removes most
// of them; a no-op where THP is off or the memory is already mapped.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const size_t bytes = t.numel() * t.element_size();
  if (bytes < 4 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.const_data_ptr()) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.const_data_ptr()) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

// (L, n, n) float32 1-D responses of every kernel, flattened: table[(l * n + p) * n + i].
std::vector<float> response_tables(const std::vector<int64_t>& kernels, int64_t n) {
  std::vector<float> out(kernels.size() * n * n);
  for (size_t l = 0; l < kernels.size(); ++l)
    for (int64_t p = 0; p < n; ++p)
      for (int64_t i = 0; i < n; ++i)
        out[(l * n + p) * n + i] = static_cast<float>(one_hot_response(p, i, n, kernels[l]));
  return out;
}

}  // namespace

at::Tensor megvii_targets_cpu(const at::Tensor& keypoints, const at::Tensor& weights, int64_t width,
                              int64_t height, at::IntArrayRef kernels, bool center_norm) {
  check_keypoints(keypoints, weights, kMegvii);
  RSN_CHECK_ARG(width > 0 && height > 0, kMegvii, "heatmap_size", "must be positive, got (", width, ", ", height,
                ")");
  std::vector<int64_t> ks(kernels.begin(), kernels.end());
  for (int64_t k : ks) RSN_CHECK_ARG(k >= 1 && k % 2 == 1, kMegvii, "kernels", "must be odd and >= 1, got ", k);
  const int64_t n = keypoints.size(0), kk = keypoints.size(1), L = static_cast<int64_t>(ks.size());
  const at::Tensor kp = keypoints.to(at::kDouble).contiguous();
  const at::Tensor wt = weights.to(at::kDouble).contiguous();
  at::Tensor out = at::empty({n, L, kk, height, width}, keypoints.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  advise_huge_pages(out);
  const std::vector<float> rx = response_tables(ks, width), ry = response_tables(ks, height);
  const double* kpp = kp.const_data_ptr<double>();
  const double* wp = wt.const_data_ptr<double>();
  float* op = out.mutable_data_ptr<float>();
  const int64_t hw = height * width;
  parallel_items(n * L * kk, std::max<int64_t>(1, 65536 / hw), [&](int64_t begin, int64_t end) {
    std::vector<float> srow(width);
    for (int64_t item = begin; item < end; ++item) {  // item = (b, l, j) in output order
      const int64_t j = item % kk, l = (item / kk) % L, b = item / (kk * L);
      float* map = op + item * hw;
      int64_t xi, yi;
      if (!megvii_cell(kpp[(b * kk + j) * 2], kpp[(b * kk + j) * 2 + 1], wp[b * kk + j], width, height, &xi, &yi)) {
        std::memset(map, 0, sizeof(float) * hw);
        continue;
      }
      const float* row = rx.data() + (l * width + xi) * width;
      const float* col = ry.data() + (l * height + yi) * height;
      float denom;
      if (center_norm) {
        denom = row[xi] * col[yi];
      } else {
        const float rmax = *std::max_element(row, row + width), cmax = *std::max_element(col, col + height);
        denom = rmax * cmax;
      }
      const float scale = (255.0f / denom) * 1.0f;
      for (int64_t x = 0; x < width; ++x) srow[x] = row[x] * scale;
      for (int64_t y = 0; y < height; ++y) {
        const float cy = col[y];
        float* __restrict o = map + y * width;
        const float* __restrict sr = srow.data();
        for (int64_t x = 0; x < width; ++x) o[x] = cy * sr[x];
      }
    }
  });
  return out;
}

at::Tensor gaussian_targets_cpu(const at::Tensor& keypoints, const at::Tensor& weights, int64_t width,
                                int64_t height, double sigma) {
  check_keypoints(keypoints, weights, kGauss);
  RSN_CHECK_ARG(width > 0 && height > 0, kGauss, "heatmap_size", "must be positive, got (", width, ", ", height,
                ")");
  RSN_CHECK_ARG(sigma > 0, kGauss, "sigma", "must be positive, got ", sigma);
  const int64_t n = keypoints.size(0), kk = keypoints.size(1);
  const at::Tensor kp = keypoints.to(at::kFloat).contiguous();
  const at::Tensor wt = weights.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({n, kk, height, width}, keypoints.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  advise_huge_pages(out);
  const GaussPatch gp = gauss_patch(sigma);
  const float* kpp = kp.const_data_ptr<float>();
  const float* wp = wt.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  const int64_t hw = height * width;
  parallel_items(n * kk, std::max<int64_t>(1, 65536 / hw), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      float* map = op + item * hw;
      std::memset(map, 0, sizeof(float) * hw);
      int64_t left, top, right, bottom;
      if (!gauss_origin(kpp[2 * item], kpp[2 * item + 1], wp[item], gp, width, height, &left, &top, &right, &bottom))
        continue;
      const int64_t y0 = std::max<int64_t>(top, 0), y1 = std::min({bottom, top + gp.size, height});
      const int64_t x0 = std::max<int64_t>(left, 0), x1 = std::min({right, left + gp.size, width});
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) map[y * width + x] = gauss_value(x - left, y - top, gp);
    }
  });
  return out;
}

#ifdef RSN_FAST_WITH_CUDA
at::Tensor megvii_targets_cuda(const at::Tensor& keypoints, const at::Tensor& weights, int64_t width,
                               int64_t height, at::IntArrayRef kernels, bool center_norm) {
  const CudaDeviceGuard guard(keypoints.device());
  check_keypoints(keypoints, weights, kMegvii);
  RSN_CHECK_ARG(width > 0 && height > 0, kMegvii, "heatmap_size", "must be positive");
  RSN_CHECK_ARG(kernels.size() <= kMaxTargetKernels, kMegvii, "kernels", "at most ", kMaxTargetKernels,
                " kernels on CUDA, got ", kernels.size());
  TargetKernels tk{};
  tk.count = static_cast<int>(kernels.size());
  for (size_t i = 0; i < kernels.size(); ++i) {
    RSN_CHECK_ARG(kernels[i] >= 1 && kernels[i] % 2 == 1, kMegvii, "kernels", "must be odd and >= 1, got ",
                  kernels[i]);
    tk.k[i] = static_cast<int>(kernels[i]);
  }
  const at::Tensor kp = keypoints.to(at::kDouble).contiguous();
  const at::Tensor wt = weights.to(at::kDouble).contiguous();
  const int64_t n = keypoints.size(0), kk = keypoints.size(1);
  at::Tensor out = at::empty({n, tk.count, kk, height, width}, keypoints.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  const cudaError_t err =
      launch_megvii_targets(kp.const_data_ptr<double>(), wt.const_data_ptr<double>(), out.mutable_data_ptr<float>(),
                            n, kk, width, height, tk, center_norm, cuda_stream());
  TORCH_CHECK(err == cudaSuccess, kMegvii, ": CUDA kernel launch failed: ", cuda_error_string(err));
  return out;
}

at::Tensor gaussian_targets_cuda(const at::Tensor& keypoints, const at::Tensor& weights, int64_t width,
                                 int64_t height, double sigma) {
  const CudaDeviceGuard guard(keypoints.device());
  check_keypoints(keypoints, weights, kGauss);
  RSN_CHECK_ARG(width > 0 && height > 0, kGauss, "heatmap_size", "must be positive");
  RSN_CHECK_ARG(sigma > 0, kGauss, "sigma", "must be positive, got ", sigma);
  const at::Tensor kp = keypoints.to(at::kFloat).contiguous();
  const at::Tensor wt = weights.to(at::kFloat).contiguous();
  const int64_t n = keypoints.size(0), kk = keypoints.size(1);
  at::Tensor out = at::empty({n, kk, height, width}, keypoints.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  const cudaError_t err =
      launch_gaussian_targets(kp.const_data_ptr<float>(), wt.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                              n, kk, width, height, sigma, cuda_stream());
  TORCH_CHECK(err == cudaSuccess, kGauss, ": CUDA kernel launch failed: ", cuda_error_string(err));
  return out;
}
#endif

TORCH_LIBRARY_FRAGMENT(RSN_FAST_OP_LIBRARY, m) {
  // (N, K, 2) heatmap-pixel keypoints -> (N, L, K, H, W) float32 Megvii targets; see rsn_fast.ops.megvii_targets.
#define RSN_MEGVII_SCHEMA "(Tensor keypoints, Tensor weights, int width, int height, int[] kernels, bool center_norm) -> Tensor"
#define RSN_GAUSS_SCHEMA "(Tensor keypoints, Tensor weights, int width, int height, float sigma) -> Tensor"
  m.def("megvii_targets" RSN_MEGVII_SCHEMA);
  // (N, K, 2) heatmap-pixel keypoints -> (N, K, H, W) float32 unnormalised Gaussians (peak 1), MMPose MSRA rule.
  m.def("gaussian_targets" RSN_GAUSS_SCHEMA);
#ifdef RSN_FAST_CUDA_EMULATION  // the CUDA kernels on CPU tensors (csrc/emulation)
  m.def("megvii_targets_emulated_cuda" RSN_MEGVII_SCHEMA);
  m.def("gaussian_targets_emulated_cuda" RSN_GAUSS_SCHEMA);
#endif
}

TORCH_LIBRARY_IMPL(RSN_FAST_OP_LIBRARY, CPU, m) {
  m.impl("megvii_targets", &megvii_targets_cpu);
  m.impl("gaussian_targets", &gaussian_targets_cpu);
}

#ifdef RSN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(RSN_FAST_OP_LIBRARY, RSN_FAST_CUDA_KEY, m) {
  m.impl(RSN_FAST_CUDA_OP_NAME("megvii_targets"), &megvii_targets_cuda);
  m.impl(RSN_FAST_CUDA_OP_NAME("gaussian_targets"), &gaussian_targets_cuda);
}
#endif

}  // namespace rsn_fast
