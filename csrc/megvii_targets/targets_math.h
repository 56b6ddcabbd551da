// Per-pixel arithmetic of megvii_targets and gaussian_targets, shared by the CPU kernels and the CUDA kernels.
// Torch-free; the formulas follow rsn_fast/ops/megvii_targets/reference.py and MMPose's MSRAHeatmap targets.
#pragma once

#include <cmath>
#include <cstdint>

#include "decode_heatmaps/decode_math.h"

namespace rsn_fast {

#if !defined(__CUDACC__)

using std::floor;
using std::isfinite;
#endif

// Tap j of cv2.getGaussianKernel(k, 0) in float64 (fixed tables for k <= 9; else exp(-x^2/(2 sigma^2)) / sum,
// with the sum passed in so a caller computes it once).
RSN_HD double cv2_tap(int64_t k, int64_t j, double total) {
  if (k <= 9) {
    const int small[5][9] = {{256}, {64, 128, 64}, {16, 64, 96, 64, 16}, {8, 28, 56, 72, 56, 28, 8},
                             {4, 13, 30, 51, 60, 51, 30, 13, 4}};
    return small[k / 2][j] / 256.0;
  }
  const double sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8;
  const double x = j - (k - 1) * 0.5;
  return exp(-0.5 / (sigma * sigma) * x * x) * (1.0 / total);
}

RSN_HD double cv2_tap_total(int64_t k) {
  if (k <= 9) return 1.0;
  const double sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8;
  double total = 0;
  for (int64_t j = 0; j < k; ++j) {
    const double x = j - (k - 1) * 0.5;
    total += exp(-0.5 / (sigma * sigma) * x * x);
  }
  return total;
}

// Value at i of the 1-D blur (kernel k, reflect-101 border, line length n) of a one-hot at p: the taps j whose
// source cell reflect101(i + j - c) is p, summed in tap order.
RSN_HD double one_hot_response(int64_t p, int64_t i, int64_t n, int64_t k, double total) {
  const int64_t c = (k - 1) / 2;
  double acc = 0;
  for (int64_t j = 0; j < k; ++j)
    if (reflect101(i + j - c, n) == p) acc += cv2_tap(k, j, total);
  return acc;
}

inline double one_hot_response(int64_t p, int64_t i, int64_t n, int64_t k) {
  return one_hot_response(p, i, n, k, cv2_tap_total(k));
}

// The integer cell of a Megvii target, false for a zero map (weight <= 0, non-finite, negative or off the map).
RSN_HD bool megvii_cell(double x, double y, double w, int64_t width, int64_t height, int64_t* xi, int64_t* yi) {
  if (!(w > 0) || !isfinite(x) || !isfinite(y) || x < 0 || y < 0) return false;
  const double fx = floor(x), fy = floor(y);
  if (fx >= width || fy >= height) return false;
  *xi = static_cast<int64_t>(fx);
  *yi = static_cast<int64_t>(fy);
  return true;
}

// MMPose generate_gaussian_heatmaps geometry for one sigma: radius 3 sigma, patch of ceil(2 radius + 1) cells
// with its centre at floor((2 radius + 1) / 2).
struct GaussPatch {
  double radius;
  int64_t size;
  float center;
  float two_sigma_sq;
};

inline GaussPatch gauss_patch(double sigma) {
  GaussPatch g;
  g.radius = sigma * 3;
  const double full = 2 * g.radius + 1;
  g.size = static_cast<int64_t>(std::ceil(full));
  g.center = static_cast<float>(std::floor(full / 2));
  g.two_sigma_sq = static_cast<float>(2 * sigma * sigma);
  return g;
}

// Heatmap cells [left, right) x [top, bottom) of the patch (patch cell = heatmap cell - (left, top)); false when
// the keypoint is skipped (weight < 0.5, non-finite, no overlap), as MMPose does.
RSN_HD bool gauss_origin(float x, float y, float w, const GaussPatch& g, int64_t width, int64_t height,
                         int64_t* left, int64_t* top, int64_t* right, int64_t* bottom) {
  if (!(w >= 0.5f) || !isfinite(x) || !isfinite(y)) return false;
  const double mx = static_cast<double>(static_cast<int64_t>(x + 0.5f));  // astype(int64) truncates
  const double my = static_cast<double>(static_cast<int64_t>(y + 0.5f));
  const int64_t l = static_cast<int64_t>(mx - g.radius), t = static_cast<int64_t>(my - g.radius);
  const int64_t r = static_cast<int64_t>(mx + g.radius + 1), b = static_cast<int64_t>(my + g.radius + 1);
  if (l >= width || t >= height || r < 0 || b < 0) return false;
  *left = l;
  *top = t;
  *right = r;
  *bottom = b;
  return true;
}

// exp(-((gx - c)^2 + (gy - c)^2) / (2 sigma^2)) in float32, as MMPose evaluates it on its float32 grid.
RSN_HD float gauss_value(int64_t gx, int64_t gy, const GaussPatch& g) {
  const float dx = static_cast<float>(gx) - g.center, dy = static_cast<float>(gy) - g.center;
  return ::expf(-(dx * dx + dy * dy) / g.two_sigma_sq);
}

}  // namespace rsn_fast
