// decode_heatmaps: input checks, the fused CPU kernel, and the launch of the CUDA kernels.
//
// Semantics are those of rsn_fast/ops/decode_heatmaps/reference.py (the specification), step by step and in the
// same floating-point order (so integer peaks agree exactly, ties included): flip-back average, the zero-padded
// Gaussian blur with cv2's reflect-101 border (row filter then column filter, symmetric taps summed in pairs),
// NumPy-style argmax (first maximum in row-major order, a NaN wins), the mode's offsets, scores, and the
// back-transform to image pixels. float64 heatmaps are decoded in float64, every other dtype in float32.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/checks.h"
#include "decode_heatmaps/cpu_parallel.h"
#include "decode_heatmaps/decode_math.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"

#include "decode_heatmaps/decode_heatmaps_cuda.h"
#endif

// RSN_FAST_OP_LIBRARY lets a development build register the op under another namespace next to rsn_fast._C.
#ifndef RSN_FAST_OP_LIBRARY
#define RSN_FAST_OP_LIBRARY rsn_fast
#endif

namespace rsn_fast {
namespace {

constexpr const char* kOp = "rsn_fast::decode_heatmaps";

int parse_mode(const std::string& mode) {
  if (mode == "rsn") return kModeRsn;
  if (mode == "megvii") return kModeMegvii;
  if (mode == "standard") return kModeStandard;
  if (mode == "dark") return kModeDark;
  TORCH_CHECK_VALUE(false, kOp, ": argument 'mode' must be one of rsn, megvii, standard, dark, got '", mode, "'");
}

// Where the blurred values of one map are computed: the output region [r0, r1) x [c0, c1) of a zero grid of
// gh x gw holding the map at (pad, pad), plus the border-extended input rows/columns the filters read.
struct BlurPlan {
  int64_t h, w, r, pad, gh, gw;
  int64_t r0, r1, c0, c1;            // output region in grid coordinates
  int64_t er, ec;                    // extended input: rows [r0 - r, r1 + r), cols [c0 - r, c1 + r)
  std::vector<int64_t> row_src;      // per extended row: source map row, or -1 for a zero row
  int64_t span_at;                   // extended column where map column 0 sits (identity part)
  std::vector<std::pair<int64_t, int64_t>> extra_cols;  // (extended col, map col) reflected copies
  bool zero_outside;                 // grid cells outside the region are exactly zero
  int64_t first_zero;                // row-major grid index of the first such cell

  BlurPlan(int64_t h_, int64_t w_, int64_t r_, int64_t pad_, bool crop_to_map) : h(h_), w(w_), r(r_), pad(pad_) {
    gh = h + 2 * pad;
    gw = w + 2 * pad;
    if (crop_to_map) {  // MMPose: only the map's own cells are kept
      r0 = pad, r1 = pad + h, c0 = pad, c1 = pad + w;
      zero_outside = false;
    } else if (r <= pad) {  // the reflected border reads only zero cells: values vanish beyond r of the map
      r0 = pad - r, r1 = pad + h + r, c0 = pad - r, c1 = pad + w + r;
      zero_outside = !(r0 == 0 && c0 == 0 && r1 == gh && c1 == gw);
    } else {
      r0 = 0, r1 = gh, c0 = 0, c1 = gw;
      zero_outside = false;
    }
    first_zero = 0;
    if (zero_outside) {
      if (r0 > 0 || c0 > 0) first_zero = 0;
      else if (c1 < gw) first_zero = c1;
      else first_zero = r1 * gw;
    }
    er = (r1 - r0) + 2 * r;
    ec = (c1 - c0) + 2 * r;
    row_src.resize(er);
    for (int64_t i = 0; i < er; ++i) {
      const int64_t m = reflect101(r0 - r + i, gh) - pad;
      row_src[i] = (m >= 0 && m < h) ? m : -1;
    }
    span_at = pad - (c0 - r);
    for (int64_t j = 0; j < ec; ++j) {
      const int64_t gj = c0 - r + j;
      const int64_t m = reflect101(gj, gw) - pad;
      if (m >= 0 && m < w && gj != m + pad) extra_cols.emplace_back(j, m);
    }
  }
  int64_t out_rows() const { return r1 - r0; }
  int64_t out_cols() const { return c1 - c0; }
};

// Max and "holds a NaN" of one row. SSE for float (x86-64 always has it); a plain loop otherwise.
template <typename acc_t>
inline void row_stats(const acc_t* __restrict v, int64_t n, acc_t* mx, bool* has_nan) {
  acc_t m = v[0];
  bool nan = false;
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<acc_t, float>) {
    if (n >= 8) {
      __m128 m0 = _mm_loadu_ps(v), m1 = _mm_loadu_ps(v + 4);
      __m128 u = _mm_or_ps(_mm_cmpunord_ps(m0, m0), _mm_cmpunord_ps(m1, m1));
      for (i = 8; i + 8 <= n; i += 8) {
        const __m128 a = _mm_loadu_ps(v + i), b = _mm_loadu_ps(v + i + 4);
        u = _mm_or_ps(u, _mm_or_ps(_mm_cmpunord_ps(a, a), _mm_cmpunord_ps(b, b)));
        m0 = _mm_max_ps(m0, a);
        m1 = _mm_max_ps(m1, b);
      }
      alignas(16) float lanes[8];
      _mm_store_ps(lanes, m0);
      _mm_store_ps(lanes + 4, m1);
      m = lanes[0];
      for (int l = 1; l < 8; ++l) m = lanes[l] > m ? lanes[l] : m;
      nan = _mm_movemask_ps(u) != 0;
    }
  }
#endif
  for (; i < n; ++i) {
    const acc_t x = v[i];
    nan |= x != x;
    m = x > m ? x : m;
  }
  *mx = m;  // meaningful only without NaN; with one, callers look for the first NaN instead
  *has_nan = nan;
}

// out[c] = in0[c]*g[r] + sum_j g[r+j]*(in0[c-j*step] + in0[c+j*step]), accumulated in the reference's order
// (centre tap first, then pairs j = 1..r); R > 0 unrolls the taps.
template <int R, typename acc_t>
inline void filter_taps(const acc_t* __restrict in0, int64_t step, const acc_t* __restrict g, int64_t r,
                        acc_t* __restrict out, int64_t n) {
  const int64_t rr = R > 0 ? R : r;
  const acc_t gc = g[rr];
  if constexpr (R > 0) {
    acc_t gj[R + 1];
    for (int j = 1; j <= R; ++j) gj[j] = g[R + j];
    for (int64_t c = 0; c < n; ++c) {
      acc_t acc = in0[c] * gc;
      for (int j = 1; j <= R; ++j) acc = acc + gj[j] * (in0[c - j * step] + in0[c + j * step]);
      out[c] = acc;
    }
  } else {
    for (int64_t c = 0; c < n; ++c) out[c] = in0[c] * gc;
    for (int64_t j = 1; j <= rr; ++j) {
      const acc_t w = g[rr + j];
      for (int64_t c = 0; c < n; ++c) out[c] = out[c] + w * (in0[c - j * step] + in0[c + j * step]);
    }
  }
}

template <typename acc_t>
inline void filter(const acc_t* in0, int64_t step, const acc_t* g, int64_t r, acc_t* out, int64_t n) {
  switch (r) {
    case 0: filter_taps<0>(in0, step, g, r, out, n); break;
    case 1: filter_taps<1>(in0, step, g, r, out, n); break;
    case 2: filter_taps<2>(in0, step, g, r, out, n); break;
    case 3: filter_taps<3>(in0, step, g, r, out, n); break;
    case 4: filter_taps<4>(in0, step, g, r, out, n); break;
    case 5: filter_taps<5>(in0, step, g, r, out, n); break;
    default: filter_taps<0>(in0, step, g, r, out, n);
  }
}

// NumPy argmax of a rows x cols row-major array, from per-row statistics: (flat index, value); a NaN wins.
template <typename acc_t>
std::pair<int64_t, acc_t> argmax_rows(const acc_t* v, int64_t rows, int64_t cols, const acc_t* rmax,
                                      const bool* rnan) {
  for (int64_t y = 0; y < rows; ++y) {
    if (!rnan[y]) continue;
    const acc_t* row = v + y * cols;
    for (int64_t c = 0; c < cols; ++c)
      if (row[c] != row[c]) return {y * cols + c, row[c]};
  }
  acc_t best = rmax[0];
  for (int64_t y = 1; y < rows; ++y) best = rmax[y] > best ? rmax[y] : best;
  for (int64_t y = 0; y < rows; ++y) {
    if (!(rmax[y] == best)) continue;
    const acc_t* row = v + y * cols;
    for (int64_t c = 0; c < cols; ++c)
      if (row[c] == best) return {y * cols + c, row[c]};
  }
  return {0, v[0]};  // unreachable
}

// Per-thread scratch for one map at a time. The extended input keeps its zero cells from the first fill.
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> map, ext, tmp, out, mrow_max, orow_max;
  std::unique_ptr<bool[]> mrow_nan, orow_nan;
  Scratch(const BlurPlan* plan, int64_t h, int64_t w) : map(h * w), mrow_max(h), mrow_nan(new bool[h]) {
    if (plan) {
      ext.assign(plan->er * plan->ec, acc_t(0));
      tmp.assign(plan->er * plan->out_cols(), acc_t(0));
      out.assign(plan->out_rows() * plan->out_cols(), acc_t(0));
      orow_max.assign(plan->out_rows(), acc_t(0));
      orow_nan.reset(new bool[plan->out_rows()]);
    }
  }
};

// Blurs scratch.map per plan into scratch.out (out_rows x out_cols, row-major), with per-row statistics.
template <typename acc_t>
void blur(const BlurPlan& p, const acc_t* g, Scratch<acc_t>& s, const acc_t* map) {
  const int64_t r = p.r, ec = p.ec, oc = p.out_cols(), orows = p.out_rows();
  acc_t* ext = s.ext.data();
  acc_t* tmp = s.tmp.data();
  for (int64_t i = 0; i < p.er; ++i) {
    const int64_t m = p.row_src[i];
    if (m < 0) continue;  // zero row, zero in ext and tmp since allocation
    acc_t* e = ext + i * ec;
    const acc_t* src = map + m * p.w;
    std::memcpy(e + p.span_at, src, sizeof(acc_t) * p.w);
    for (const auto& [j, mc] : p.extra_cols) e[j] = src[mc];
    filter(e + r, int64_t{1}, g, r, tmp + i * oc, oc);  // row filter: valid correlation
  }
  for (int64_t y = 0; y < orows; ++y) {  // column filter
    acc_t* o = s.out.data() + y * oc;
    filter(tmp + (y + r) * oc, oc, g, r, o, oc);
    row_stats(o, oc, &s.orow_max[y], &s.orow_nan[y]);
  }
}

// argmax over the whole zero grid of the RSN decoder, given the computed region (grid index, value).
template <typename acc_t>
std::pair<int64_t, acc_t> argmax_grid(const BlurPlan& p, Scratch<acc_t>& s) {
  const int64_t oc = p.out_cols();
  auto [li, val] = argmax_rows(s.out.data(), p.out_rows(), oc, s.orow_max.data(), s.orow_nan.get());
  int64_t gi = (p.r0 + li / oc) * p.gw + p.c0 + li % oc;
  if (!p.zero_outside || val != val || val > acc_t(0)) return {gi, val};
  if (val < acc_t(0)) return {p.first_zero, acc_t(0)};
  return {std::min(gi, p.first_zero), acc_t(0)};
}

template <typename scalar_t, typename acc_t>
struct CpuDecoder {
  const scalar_t* hm;
  const scalar_t* fl;      // flipped maps or null
  const int64_t* perm;     // channel permutation for the flipped maps (null without them)
  const acc_t* centers;    // (N, 2)
  const acc_t* boxes;      // (N, 2)
  acc_t* coords;           // (N, K, 2)
  acc_t* scores;           // (N, K)
  int64_t n, k, h, w;
  int mode;
  int64_t ksize;
  double in_w, in_h;

  void run() const {
    std::vector<acc_t> g = gaussian_kernel<acc_t>(ksize);
    const int64_t r = ksize / 2;
    std::unique_ptr<BlurPlan> plan;
    if (mode == kModeRsn) plan = std::make_unique<BlurPlan>(h, w, r, kRsnBorder, false);
    else if (mode != kModeStandard) plan = std::make_unique<BlurPlan>(h, w, r, (ksize - 1) / 2, true);
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(h * w, 1));
    parallel_items(n * k, grain, [&](int64_t begin, int64_t end) {
      Scratch<acc_t> s(plan.get(), h, w);
      for (int64_t item = begin; item < end; ++item) one(item, g.data(), plan.get(), s);
    });
  }

  // The (flip-averaged) map in the compute type, with its per-row statistics.
  void load(int64_t item, Scratch<acc_t>& s, bool stats) const {
    const scalar_t* a = hm + item * h * w;
    acc_t* m = s.map.data();
    const scalar_t* b = nullptr;
    if (fl) b = fl + ((item / k) * k + perm[item % k]) * h * w;
    for (int64_t y = 0; y < h; ++y) {
      const scalar_t* __restrict ar = a + y * w;
      acc_t* __restrict mr = m + y * w;
      if (!b) {
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          std::memcpy(mr, ar, sizeof(acc_t) * w);
        } else {
          for (int64_t x = 0; x < w; ++x) mr[x] = static_cast<acc_t>(ar[x]);
        }
      } else {
        const scalar_t* __restrict br = b + y * w + (w - 1);
        for (int64_t x = 0; x < w; ++x)
          mr[x] = (static_cast<acc_t>(ar[x]) + static_cast<acc_t>(br[-x])) * acc_t(0.5);
      }
      if (stats) row_stats(mr, w, &s.mrow_max[y], &s.mrow_nan[y]);
    }
  }

  std::pair<int64_t, acc_t> map_argmax(Scratch<acc_t>& s) const {
    return argmax_rows(s.map.data(), h, w, s.mrow_max.data(), s.mrow_nan.get());
  }

  // MMPose gaussian_blur's rescale factor: max of the map / max of the cropped blur (NaN for an all-zero map).
  acc_t mmpose_ratio(Scratch<acc_t>& s) const {
    const acc_t omax = map_argmax(s).second;
    const acc_t bmax = argmax_rows(s.out.data(), h, w, s.orow_max.data(), s.orow_nan.get()).second;
    return omax / bmax;
  }

  void one(int64_t item, const acc_t* g, const BlurPlan* plan, Scratch<acc_t>& s) const {
    // RSN reads the raw map only through the blur and one score pixel: a float map without flip is used in place.
    const acc_t* m = s.map.data();
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (mode == kModeRsn && !fl) m = hm + item * h * w;
    }
    if (m == s.map.data()) load(item, s, mode != kModeRsn);
    acc_t x_in, y_in, score;
    if (mode == kModeRsn) {
      blur(*plan, g, s, m);
      const int64_t oc = plan->out_cols(), gw = plan->gw;
      const auto [i1, v1] = argmax_grid(*plan, s);
      const int64_t y1 = i1 / gw, x1 = i1 % gw;
      const int64_t oy = y1 - plan->r0, ox = x1 - plan->c0;
      if (oy >= 0 && oy < plan->out_rows() && ox >= 0 && ox < oc) {  // else it is a zero cell already
        acc_t* row = s.out.data() + oy * oc;
        row[ox] = acc_t(0);
        row_stats(row, oc, &s.orow_max[oy], &s.orow_nan[oy]);
      }
      const auto [i2, v2] = argmax_grid(*plan, s);
      RsnPeak<acc_t> pk = rsn_offset<acc_t>(x1, y1, i2 % gw, i2 / gw, kRsnBorder, w, h);
      const int64_t sx = static_cast<int64_t>(std::nearbyint(pk.x));
      const int64_t sy = static_cast<int64_t>(std::nearbyint(pk.y));
      score = m[sy * w + sx] / acc_t(255) + acc_t(0.5);
      const acc_t stx = static_cast<acc_t>(in_w / w), sty = static_cast<acc_t>(in_h / h);
      x_in = pk.x * stx + static_cast<acc_t>(in_w / w / 2);
      y_in = pk.y * sty + static_cast<acc_t>(in_h / h / 2);
    } else {
      acc_t fx, fy;
      if (mode == kModeMegvii) {
        blur(*plan, g, s, m);
        const acc_t ratio = mmpose_ratio(s);
        acc_t* b = s.out.data();
        for (int64_t y = 0; y < h; ++y) {
          acc_t* __restrict br = b + y * w;
          for (int64_t x = 0; x < w; ++x) br[x] = br[x] * ratio;
          row_stats(br, w, &s.orow_max[y], &s.orow_nan[y]);
        }
        const auto [idx, val] = argmax_rows(b, h, w, s.orow_max.data(), s.orow_nan.get());
        megvii_refine(b, idx, val, w, h, &fx, &fy);
        score = val / acc_t(255) + acc_t(0.5);
      } else {
        const auto [idx, val] = map_argmax(s);
        score = val;
        if (mode == kModeStandard) {
          standard_refine(m, idx, val, w, h, &fx, &fy);
        } else {
          const bool bad = val <= acc_t(0);
          const int64_t x = bad ? -1 : idx % w, y = bad ? -1 : idx / w;
          fx = static_cast<acc_t>(x), fy = static_cast<acc_t>(y);
          if (dark_in_bounds(x, y, w, h)) {  // the blur only feeds the Newton step
            blur(*plan, g, s, m);
            const acc_t ratio = mmpose_ratio(s);
            acc_t patch[25];  // the 5x5 neighbourhood of the rescaled blur that the step reads
            for (int dy = -2; dy <= 2; ++dy)
              for (int dx = -2; dx <= 2; ++dx) {
                const int64_t yy = y + dy, xx = x + dx;
                patch[(dy + 2) * 5 + dx + 2] = s.out[yy * w + xx] * ratio;
              }
            dark_refine(patch, int64_t{2}, int64_t{2}, int64_t{5}, &fx, &fy);
          }
        }
      }
      x_in = fx * static_cast<acc_t>(in_w / w);
      y_in = fy * static_cast<acc_t>(in_h / h);
    }
    const int64_t ni = item / k;
    const acc_t cx = centers[2 * ni], cy = centers[2 * ni + 1];
    const acc_t bw = boxes[2 * ni], bh = boxes[2 * ni + 1];
    coords[2 * item] = to_image(x_in, static_cast<acc_t>(in_w), bw, cx);
    coords[2 * item + 1] = to_image(y_in, static_cast<acc_t>(in_h), bh, cy);
    scores[item] = score;
  }
};

struct Prepared {
  at::Tensor hm, fl, perm, centers, boxes, coords, scores;
  int mode;
};

Prepared prepare(const at::Tensor& heatmaps, const at::Tensor& centers, const at::Tensor& box_sizes,
                 const std::string& mode, int64_t blur_kernel, const std::optional<at::Tensor>& flipped,
                 const std::optional<at::Tensor>& flip_perm) {
  check_ndim(heatmaps, 4, kOp, "heatmaps");
  const auto st = heatmaps.scalar_type();
  RSN_CHECK_ARG(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, kOp, "heatmaps",
                "must be float64, float32, float16 or bfloat16, got ", st);
  const int64_t n = heatmaps.size(0), k = heatmaps.size(1), h = heatmaps.size(2), w = heatmaps.size(3);
  RSN_CHECK_ARG(h > 0 && w > 0, kOp, "heatmaps", "must have non-empty maps, got shape ", heatmaps.sizes());
  for (const auto& [t, name] :
       {std::pair<const at::Tensor&, const char*>{centers, "centers"}, {box_sizes, "box_sizes"}}) {
    RSN_CHECK_ARG(t.dim() == 2 && t.size(0) == n && t.size(1) == 2, kOp, name, "must have shape (", n,
                  ", 2), got ", t.sizes());
    check_same_device(t, heatmaps, kOp, name, "heatmaps");
  }
  RSN_CHECK_ARG(blur_kernel >= 1 && blur_kernel % 2 == 1, kOp, "blur_kernel", "must be odd and >= 1, got ",
                blur_kernel);
  Prepared p;
  p.mode = parse_mode(mode);
  RSN_CHECK_ARG(!(p.mode == kModeMegvii || p.mode == kModeDark) || blur_kernel >= 3, kOp, "blur_kernel",
                "must be >= 3 for mode '", mode, "', got ", blur_kernel);
  if (flipped.has_value()) {
    RSN_CHECK_ARG(flipped->sizes() == heatmaps.sizes() && flipped->scalar_type() == st, kOp, "flipped",
                  "must match heatmaps (shape ", heatmaps.sizes(), ", dtype ", st, "), got ", flipped->sizes(),
                  " ", flipped->scalar_type());
    check_same_device(*flipped, heatmaps, kOp, "flipped", "heatmaps");
    RSN_CHECK_ARG(flip_perm.has_value() && flip_perm->dim() == 1 && flip_perm->size(0) == k &&
                      flip_perm->scalar_type() == at::kLong,
                  kOp, "flip_perm", "must be an int64 tensor of shape (", k, ",) with flipped");
    check_same_device(*flip_perm, heatmaps, kOp, "flip_perm", "heatmaps");
    p.fl = flipped->contiguous();
    p.perm = flip_perm->contiguous();
  }
  const auto acc = st == at::kDouble ? at::kDouble : at::kFloat;
  p.hm = heatmaps.contiguous();
  p.centers = centers.to(acc).contiguous();
  p.boxes = box_sizes.to(acc).contiguous();
  p.coords = at::empty({n, k, 2}, heatmaps.options().dtype(acc));
  p.scores = at::empty({n, k}, heatmaps.options().dtype(acc));
  return p;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cpu(const at::Tensor& heatmaps, const at::Tensor& centers,
                                                       const at::Tensor& box_sizes, double input_w,
                                                       double input_h, const std::string& mode,
                                                       int64_t blur_kernel, const std::optional<at::Tensor>& flipped,
                                                       const std::optional<at::Tensor>& flip_perm) {
  Prepared p = prepare(heatmaps, centers, box_sizes, mode, blur_kernel, flipped, flip_perm);
  if (p.hm.numel() == 0) return {p.coords, p.scores};
  if (p.perm.defined()) {
    const int64_t* pp = p.perm.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < p.perm.numel(); ++i)
      RSN_CHECK_ARG(pp[i] >= 0 && pp[i] < p.hm.size(1), kOp, "flip_perm", "has an out-of-range channel ", pp[i]);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.hm.scalar_type(), "decode_heatmaps_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    CpuDecoder<scalar_t, acc_t> d{p.hm.const_data_ptr<scalar_t>(),
                                  p.fl.defined() ? p.fl.const_data_ptr<scalar_t>() : nullptr,
                                  p.perm.defined() ? p.perm.const_data_ptr<int64_t>() : nullptr,
                                  p.centers.const_data_ptr<acc_t>(),
                                  p.boxes.const_data_ptr<acc_t>(),
                                  p.coords.mutable_data_ptr<acc_t>(),
                                  p.scores.mutable_data_ptr<acc_t>(),
                                  p.hm.size(0),
                                  p.hm.size(1),
                                  p.hm.size(2),
                                  p.hm.size(3),
                                  p.mode,
                                  blur_kernel,
                                  input_w,
                                  input_h};
    d.run();
  });
  return {p.coords, p.scores};
}

#ifdef RSN_FAST_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cuda(const at::Tensor& heatmaps, const at::Tensor& centers,
                                                        const at::Tensor& box_sizes, double input_w,
                                                        double input_h, const std::string& mode,
                                                        int64_t blur_kernel,
                                                        const std::optional<at::Tensor>& flipped,
                                                        const std::optional<at::Tensor>& flip_perm) {
  const CudaDeviceGuard guard(heatmaps.device());
  Prepared p = prepare(heatmaps, centers, box_sizes, mode, blur_kernel, flipped, flip_perm);
  if (p.hm.numel() == 0) return {p.coords, p.scores};
  const auto st = p.hm.scalar_type();
  const DecodeDType dt = st == at::kDouble  ? DecodeDType::kFloat64
                         : st == at::kFloat ? DecodeDType::kFloat32
                         : st == at::kHalf  ? DecodeDType::kFloat16
                                            : DecodeDType::kBFloat16;
  DecodeParams prm{};
  prm.n = p.hm.size(0);
  prm.k = p.hm.size(1);
  prm.h = p.hm.size(2);
  prm.w = p.hm.size(3);
  prm.mode = p.mode;
  prm.ksize = static_cast<int>(blur_kernel);
  prm.in_w = input_w;
  prm.in_h = input_h;
  size_t needed = 0, limit = 0;
  const cudaError_t qe = decode_heatmaps_shared_memory(prm, dt, &needed, &limit);
  TORCH_CHECK(qe == cudaSuccess, kOp, ": CUDA device query failed: ", cuda_error_string(qe));
  TORCH_CHECK_VALUE(needed <= limit, kOp, ": a ", prm.h, "x", prm.w, " ", st, " heatmap (mode '", mode,
                    "', blur_kernel ", blur_kernel, ") needs ", needed,
                    " bytes of shared memory per block (one map's blur rows in the compute type), more than this "
                    "GPU's per-block maximum of ", limit,
                    " bytes (the opt-in limit; 96 KiB on sm_70). Decode maps this large with backend='cpp' "
                    "(or 'reference'), or pass float32 instead of float64 heatmaps, or smaller maps.");
  const cudaError_t err = launch_decode_heatmaps(
      p.hm.const_data_ptr(), p.fl.defined() ? p.fl.const_data_ptr() : nullptr,
      p.perm.defined() ? p.perm.const_data_ptr<int64_t>() : nullptr, p.centers.const_data_ptr(),
      p.boxes.const_data_ptr(), p.coords.mutable_data_ptr(), p.scores.mutable_data_ptr(), prm, dt,
      cuda_stream());
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA kernel launch failed: ", cuda_error_string(err));
  return {p.coords, p.scores};
}
#endif

// The schema lives here (a fragment of the rsn_fast library) so the op's files are self-contained.
TORCH_LIBRARY_FRAGMENT(RSN_FAST_OP_LIBRARY, m) {
  // Heatmaps (N, K, H, W) -> (coords (N, K, 2) image px, scores (N, K)); see rsn_fast.ops.decode_heatmaps.
#define RSN_DECODE_SCHEMA                                                                             \
  "(Tensor heatmaps, Tensor centers, Tensor box_sizes, float input_w, float input_h, str mode, int blur_kernel, " \
  "Tensor? flipped, Tensor? flip_perm) -> (Tensor, Tensor)"
  m.def("decode_heatmaps" RSN_DECODE_SCHEMA);
#ifdef RSN_FAST_CUDA_EMULATION
  m.def("decode_heatmaps_emulated_cuda" RSN_DECODE_SCHEMA);  // the CUDA kernel on CPU tensors (csrc/emulation)
#endif
}

TORCH_LIBRARY_IMPL(RSN_FAST_OP_LIBRARY, CPU, m) { m.impl("decode_heatmaps", &decode_heatmaps_cpu); }

#ifdef RSN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(RSN_FAST_OP_LIBRARY, RSN_FAST_CUDA_KEY, m) { m.impl(RSN_FAST_CUDA_OP_NAME("decode_heatmaps"), &decode_heatmaps_cuda); }
#endif

}  // namespace rsn_fast
