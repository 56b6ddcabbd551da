// The per-keypoint arithmetic of decode_heatmaps, shared by the CPU kernel (.cpp) and the CUDA kernels (.cu).
// Torch-free. Each formula keeps the operation order of rsn_fast/ops/decode_heatmaps/reference.py.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define RSN_HD __host__ __device__ __forceinline__
#else
#define RSN_HD inline
#endif

namespace rsn_fast {

constexpr int kModeRsn = 0;
constexpr int kModeMegvii = 1;
constexpr int kModeStandard = 2;
constexpr int kModeDark = 3;
constexpr int64_t kRsnBorder = 10;  // zero padding of the official RSN decoder (RSN_SPEC §12.1 step 5)

// cv2.borderInterpolate(i, n, BORDER_REFLECT_101), folding as often as needed.
RSN_HD int64_t reflect101(int64_t i, int64_t n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

// The blurred cells a decoder needs, in the coordinates of the zero grid (gh x gw) that holds the h x w map at
// (pad, pad): rows [r0, r1) x cols [c0, c1). Outside it (RSN, r <= pad) the blur is exactly zero; first_zero is
// the row-major index of the first such cell. MMPose's blur keeps only the map's own cells (crop).
struct GridPlan {
  int64_t h, w, r, pad, gh, gw, r0, r1, c0, c1, first_zero;
  bool zero_outside;
};

inline GridPlan make_grid_plan(int64_t h, int64_t w, int64_t r, int64_t pad, bool crop) {
  GridPlan p{};
  p.h = h, p.w = w, p.r = r, p.pad = pad, p.gh = h + 2 * pad, p.gw = w + 2 * pad;
  if (crop) {
    p.r0 = pad, p.r1 = pad + h, p.c0 = pad, p.c1 = pad + w;
  } else if (r <= pad) {
    p.r0 = pad - r, p.r1 = pad + h + r, p.c0 = pad - r, p.c1 = pad + w + r;
    p.zero_outside = !(p.r0 == 0 && p.c0 == 0 && p.r1 == p.gh && p.c1 == p.gw);
  } else {
    p.r0 = 0, p.r1 = p.gh, p.c0 = 0, p.c1 = p.gw;
  }
  if (p.zero_outside) p.first_zero = (p.r0 > 0 || p.c0 > 0) ? 0 : (p.c1 < p.gw ? p.c1 : p.r1 * p.gw);
  return p;
}

// cv2.getGaussianKernel(ksize, 0): fixed tables for ksize <= 9 (multiples of 1/256, exact in any float type),
// else sigma = 0.3((k-1)/2 - 1) + 0.8 in float64, normalised by the reciprocal of the sum, then cast.
template <typename acc_t>
std::vector<acc_t> gaussian_kernel(int64_t ksize) {
  static const int kSmall[5][9] = {{256}, {64, 128, 64}, {16, 64, 96, 64, 16}, {8, 28, 56, 72, 56, 28, 8},
                                   {4, 13, 30, 51, 60, 51, 30, 13, 4}};
  std::vector<acc_t> out(ksize);
  if (ksize <= 9) {
    for (int64_t i = 0; i < ksize; ++i) out[i] = static_cast<acc_t>(kSmall[ksize / 2][i] / 256.0);
    return out;
  }
  const double sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8;
  const double scale2x = -0.5 / (sigma * sigma);
  std::vector<double> raw(ksize);
  double total = 0;
  for (int64_t i = 0; i < ksize; ++i) {
    const double x = i - (ksize - 1) * 0.5;
    raw[i] = std::exp(scale2x * x * x);
    total += raw[i];
  }
  for (int64_t i = 0; i < ksize; ++i) out[i] = static_cast<acc_t>(raw[i] * (1.0 / total));
  return out;
}

template <typename acc_t>
RSN_HD acc_t sign_of(acc_t v) {  // torch.sign: 0 for NaN and for ±0
  return v > acc_t(0) ? acc_t(1) : (v < acc_t(0) ? acc_t(-1) : acc_t(0));
}

template <typename acc_t>
struct RsnPeak {
  acc_t x, y;  // heatmap pixels, clamped into the map
};

// RSN step 7-8: 0.25 px from top-1 toward top-2 (grid coordinates), minus the border, clamped to the map.
template <typename acc_t>
RSN_HD RsnPeak<acc_t> rsn_offset(int64_t x1, int64_t y1, int64_t x2, int64_t y2, int64_t border, int64_t w,
                                 int64_t h) {
  const acc_t ddx = static_cast<acc_t>(x2 - x1), ddy = static_cast<acc_t>(y2 - y1);
  const acc_t ln = sqrt(ddx * ddx + ddy * ddy);
  const bool move = ln > acc_t(1e-3);
  acc_t x = static_cast<acc_t>(x1 - border), y = static_cast<acc_t>(y1 - border);
  if (move) {
    x = x + acc_t(0.25) * ddx / ln;
    y = y + acc_t(0.25) * ddy / ln;
  }
  const acc_t wm = static_cast<acc_t>(w - 1), hm = static_cast<acc_t>(h - 1);
  x = x < acc_t(0) ? acc_t(0) : (x > wm ? wm : x);
  y = y < acc_t(0) ? acc_t(0) : (y > hm ? hm : y);
  return {x, y};
}

// Value at (x+dx, y+dy) with the indices clamped into the map (callers mask what the clamp changed).
template <typename acc_t>
RSN_HD acc_t pick(const acc_t* m, int64_t x, int64_t y, int dx, int dy, int64_t w, int64_t h) {
  int64_t xx = x + dx, yy = y + dy;
  xx = xx < 0 ? 0 : (xx > w - 1 ? w - 1 : xx);
  yy = yy < 0 ? 0 : (yy > h - 1 ? h - 1 : yy);
  return m[yy * w + xx];
}

// MegviiHeatmap: on the rescaled blur b with argmax (idx, val): -1 when val <= 0, quarter offset + 0.5 inside.
template <typename acc_t>
RSN_HD void megvii_refine(const acc_t* b, int64_t idx, acc_t val, int64_t w, int64_t h, acc_t* fx, acc_t* fy) {
  const bool bad = val <= acc_t(0);
  const int64_t x = bad ? -1 : idx % w, y = bad ? -1 : idx / w;
  const bool inner = x > 1 && x < w - 1 && y > 1 && y < h - 1;
  const acc_t gx = pick(b, x, y, 1, 0, w, h) - pick(b, x, y, -1, 0, w, h);
  const acc_t gy = pick(b, x, y, 0, 1, w, h) - pick(b, x, y, 0, -1, w, h);
  *fx = static_cast<acc_t>(x) + (inner ? sign_of(gx) * acc_t(0.25) + acc_t(0.5) : acc_t(0));
  *fy = static_cast<acc_t>(y) + (inner ? sign_of(gy) * acc_t(0.25) + acc_t(0.5) : acc_t(0));
}

// MSRAHeatmap (unbiased=False): MMPose refine_keypoints with its exact bounds.
template <typename acc_t>
RSN_HD void standard_refine(const acc_t* m, int64_t idx, acc_t val, int64_t w, int64_t h, acc_t* fx, acc_t* fy) {
  const bool bad = val <= acc_t(0);
  const int64_t x = bad ? -1 : idx % w, y = bad ? -1 : idx / w;
  const bool okx = x > 1 && x < w - 1 && y > 0 && y < h;
  const bool oky = y > 1 && y < h - 1 && x > 0 && x < w;
  const acc_t gx = pick(m, x, y, 1, 0, w, h) - pick(m, x, y, -1, 0, w, h);
  const acc_t gy = pick(m, x, y, 0, 1, w, h) - pick(m, x, y, 0, -1, w, h);
  *fx = static_cast<acc_t>(x) + (okx ? sign_of(gx) : acc_t(0)) * acc_t(0.25);
  *fy = static_cast<acc_t>(y) + (oky ? sign_of(gy) : acc_t(0)) * acc_t(0.25);
}

RSN_HD bool dark_in_bounds(int64_t x, int64_t y, int64_t w, int64_t h) {
  return x > 1 && x < w - 2 && y > 1 && y < h - 2;
}

template <typename acc_t>
RSN_HD acc_t dark_log(acc_t v) {  // log(maximum(v, 1e-10)), NaN kept as torch.maximum does
  const acc_t floor_v = static_cast<acc_t>(1e-10);
  return log(v != v ? v : (v > floor_v ? v : floor_v));
}

// DARK: one Newton step -H^-1 g on log(blur) around the integer peak (x, y) (in bounds, see dark_in_bounds).
template <typename acc_t>
RSN_HD void dark_refine(const acc_t* b, int64_t x, int64_t y, int64_t w, acc_t* fx, acc_t* fy) {
  auto at = [&](int dx, int dy) { return dark_log(b[(y + dy) * w + (x + dx)]); };
  const acc_t c = at(0, 0);
  const acc_t dx = acc_t(0.5) * (at(1, 0) - at(-1, 0));
  const acc_t dy = acc_t(0.5) * (at(0, 1) - at(0, -1));
  const acc_t dxx = acc_t(0.25) * (at(2, 0) - acc_t(2) * c + at(-2, 0));
  const acc_t dxy = acc_t(0.25) * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1));
  const acc_t dyy = acc_t(0.25) * (at(0, 2) - acc_t(2) * c + at(0, -2));
  const acc_t det = dxx * dyy - dxy * dxy;
  if (det != acc_t(0)) {
    *fx = *fx + (-(dyy * dx - dxy * dy) / det);
    *fy = *fy + (-(dxx * dy - dxy * dx) / det);
  }
}

// Input pixels -> image pixels: x_in / W_in * S + c - S / 2.
template <typename acc_t>
RSN_HD acc_t to_image(acc_t v_in, acc_t size_in, acc_t box, acc_t center) {
  return v_in / size_in * box + center - box * acc_t(0.5);
}

}  // namespace rsn_fast
