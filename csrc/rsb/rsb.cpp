// rsb: input checks and launches of the fused RSB elementwise / statistics CUDA kernels (rsb_cuda.cu) that
// surround the cuDNN convolutions of the "cuda" backend (rsn_fast/ops/rsb/cuda.py). Schemas are defined here
// as a library fragment:
//   rsb_prologue_cuda(srcs, scale?, shift?, relu, cat, channels_last) -> u
//   rsb_channel_stats_cuda(z) -> float64 (2, C) [sum; sum of squares]
//   rsb_grad_fold_cuda(grad_z?, grad_sum?, grad_sumsq?, z) -> g
//   rsb_prologue_bwd_cuda(du, srcs, scale?, shift?, relu, cat) -> (dsrcs, float64 sums (2, sum C_k) [dscale;
//     dshift])
//   rsb_epilogue_cuda(z, scale, shift, r, r_scale?, r_shift?) -> out
//   rsb_epilogue_bwd_cuda(grad, out, z, r, scale, r_scale?) -> (dz, dr, float64 (3, C))
// Sources are read in place through their strides (any layout); dense outputs follow the layout asked for
// (prologue) or of the first map. Per-block partial sums are reduced here with at::sum over the block dimension
// in float64 (fixed order, deterministic).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "common/checks.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"

#include "rsb/rsb_cuda.h"
#endif

#define RSN_FAST_OP_LIBRARY rsn_fast

namespace rsn_fast {

#ifdef RSN_FAST_WITH_CUDA
namespace {

constexpr const char* kOp = "rsn_fast::rsb";

void check_map(const at::Tensor& t, const char* name, const at::Tensor* like = nullptr, const char* like_name = "") {
  check_cuda_map(t, kOp, name, like, like_name);
}

// Optional float32 vector with `numel` elements on ref's device: a contiguous copy, or an undefined tensor.
at::Tensor f32(const c10::optional<at::Tensor>& t, int64_t numel, const char* name, const at::Tensor& ref) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  RSN_CHECK_ARG(t->scalar_type() == at::kFloat, kOp, name, "must be float32, got ", t->scalar_type());
  RSN_CHECK_ARG(t->numel() == numel, kOp, name, "must have ", numel, " elements, got ", t->numel(), " (shape ",
                t->sizes(), ")");
  check_same_device(*t, ref, kOp, name, "the feature maps");
  return t->contiguous();
}

const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// 1..4 maps of one shape and dtype, read in place through their strides.
RsbSources sources(const std::vector<at::Tensor>& srcs) {
  RSN_CHECK_ARG(!srcs.empty() && srcs.size() <= static_cast<size_t>(kRsbMaxSrc), kOp, "srcs",
                "must hold 1 to ", kRsbMaxSrc, " tensors, got ", srcs.size());
  check_map(srcs[0], "srcs[0]");
  RsbSources s{};
  s.count = static_cast<int>(srcs.size());
  for (size_t k = 0; k < srcs.size(); ++k) {
    check_map(srcs[k], "srcs[k]", &srcs[0], "srcs[0]");
    s.ptr[k] = srcs[k].const_data_ptr();
    for (int d = 0; d < 4; ++d) s.stride[k][d] = srcs[k].stride(d);
  }
  return s;
}

void check_affine(const at::Tensor& scale, const at::Tensor& shift) {
  RSN_CHECK_ARG(scale.defined() == shift.defined(), kOp, "scale", "and 'shift' must both be given or both be None");
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA launch of ", what, " failed: ", cuda_error_string(err));
}

cudaStream_t stream() { return cuda_stream(); }

}  // namespace

at::Tensor rsb_prologue_cuda(const std::vector<at::Tensor>& srcs, const c10::optional<at::Tensor>& scale,
                             const c10::optional<at::Tensor>& shift, bool relu, bool cat, bool channels_last) {
  const RsbSources s = sources(srcs);
  const at::Tensor& x = srcs[0];
  const CudaDeviceGuard guard(x.device());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), k = s.count;
  const at::Tensor a = f32(scale, k * c, "scale", x), b = f32(shift, k * c, "shift", x);
  check_affine(a, b);
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor u = at::empty({n, cat ? k * c : c, h, w}, x.options().memory_format(fmt));
  check_launch(launch_rsb_prologue(s, ptr_or_null(a), ptr_or_null(b), relu, cat, u.mutable_data_ptr(), n, c, h, w,
                                   channels_last, to_dtype(x.scalar_type()), stream()),
               "prologue");
  return u;
}

at::Tensor rsb_channel_stats_cuda(const at::Tensor& z) {
  check_map(z, "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const auto fmt = format_of(z);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor zc = z.contiguous(fmt);
  at::Tensor part = at::zeros({rsb_slots(n, hw, cl), 2, c}, z.options().dtype(at::kFloat));
  check_launch(launch_rsb_channel_stats(zc.const_data_ptr(), part.mutable_data_ptr<float>(), n, c, hw, cl,
                                        to_dtype(z.scalar_type()), stream()),
               "channel_stats");
  return at::sum(part, {0}, false, at::kDouble);
}

at::Tensor rsb_grad_fold_cuda(const c10::optional<at::Tensor>& grad_z, const c10::optional<at::Tensor>& grad_sum,
                              const c10::optional<at::Tensor>& grad_sumsq, const at::Tensor& z) {
  check_map(z, "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const auto fmt = format_of(z);
  const at::Tensor zc = z.contiguous(fmt);
  at::Tensor gz;
  if (grad_z.has_value() && grad_z->defined()) {
    RSN_CHECK_ARG(grad_z->sizes() == z.sizes(), kOp, "grad_z", "must have the shape of 'z' ", z.sizes(), ", got ",
                  grad_z->sizes());
    check_same_device(*grad_z, z, kOp, "grad_z", "z");
    gz = grad_z->to(z.scalar_type()).contiguous(fmt);  // may be an expanded view, or in another layout
  }
  const at::Tensor gs = f32(grad_sum, c, "grad_sum", z), gq = f32(grad_sumsq, c, "grad_sumsq", z);
  at::Tensor g = at::empty(z.sizes(), z.options().memory_format(fmt));
  check_launch(launch_rsb_grad_fold(gz.defined() ? gz.const_data_ptr() : nullptr, ptr_or_null(gs), ptr_or_null(gq),
                                    zc.const_data_ptr(), g.mutable_data_ptr(), n, c, hw,
                                    fmt == at::MemoryFormat::ChannelsLast, to_dtype(z.scalar_type()), stream()),
               "grad_fold");
  return g;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> rsb_prologue_bwd_cuda(const at::Tensor& du,
                                                                      const std::vector<at::Tensor>& srcs,
                                                                      const c10::optional<at::Tensor>& scale,
                                                                      const c10::optional<at::Tensor>& shift,
                                                                      bool relu, bool cat) {
  const RsbSources s = sources(srcs);
  const at::Tensor& x = srcs[0];
  check_map(du, "du");
  const CudaDeviceGuard guard(x.device());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), k = s.count;
  const int64_t cu = cat ? k * c : c;
  RSN_CHECK_ARG(du.size(0) == n && du.size(1) == cu && du.size(2) == h && du.size(3) == w, kOp, "du",
                "must have shape (", n, ", ", cu, ", ", h, ", ", w, "), got ", du.sizes());
  RSN_CHECK_ARG(du.scalar_type() == x.scalar_type(), kOp, "du", "must have the dtype of the sources (",
                x.scalar_type(), "), got ", du.scalar_type());
  check_same_device(du, x, kOp, "du", "srcs[0]");
  const at::Tensor a = f32(scale, k * c, "scale", x), b = f32(shift, k * c, "shift", x);
  check_affine(a, b);
  const auto fmt = format_of(du);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor duc = du.contiguous(fmt);
  std::vector<at::Tensor> dsrcs;
  void* dptr[kRsbMaxSrc] = {nullptr, nullptr, nullptr, nullptr};
  for (int64_t i = 0; i < k; ++i) {
    dsrcs.push_back(at::empty({n, c, h, w}, x.options().memory_format(fmt)));
    dptr[i] = dsrcs.back().mutable_data_ptr();
  }
  const int64_t rows = cat ? 2 : 2 * kRsbMaxSrc;
  at::Tensor part = at::zeros({rsb_slots(n, h * w, cl), rows, cu}, x.options().dtype(at::kFloat));
  check_launch(launch_rsb_prologue_bwd(duc.const_data_ptr(), s, ptr_or_null(a), ptr_or_null(b), relu, cat, dptr,
                                       part.mutable_data_ptr<float>(), n, c, h, w, cl, to_dtype(x.scalar_type()),
                                       stream()),
               "prologue_bwd");
  at::Tensor sums = at::sum(part, {0}, false, at::kDouble);  // (rows, cu)
  if (!cat) {
    // rows 2k, 2k + 1 of source k -> (2, k * c): [dscale; dshift], source-major like scale/shift
    sums = sums.narrow(0, 0, 2 * k).reshape({k, 2, c}).transpose(0, 1).reshape({2, k * c});
  }
  return {dsrcs, sums};
}

at::Tensor rsb_epilogue_cuda(const at::Tensor& z, const at::Tensor& scale, const at::Tensor& shift,
                             const at::Tensor& r, const c10::optional<at::Tensor>& r_scale,
                             const c10::optional<at::Tensor>& r_shift) {
  check_map(z, "z");
  check_map(r, "r", &z, "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const at::Tensor a = f32(scale, c, "scale", z), b = f32(shift, c, "shift", z);
  RSN_CHECK_ARG(a.defined() && b.defined(), kOp, "scale", "and 'shift' are required");
  const at::Tensor ra = f32(r_scale, c, "r_scale", z), rb = f32(r_shift, c, "r_shift", z);
  check_affine(ra, rb);
  const auto fmt = format_of(z);
  const at::Tensor zc = z.contiguous(fmt), rc = r.contiguous(fmt);
  at::Tensor out = at::empty(z.sizes(), z.options().memory_format(fmt));
  check_launch(launch_rsb_epilogue(zc.const_data_ptr(), a.const_data_ptr<float>(), b.const_data_ptr<float>(),
                                   rc.const_data_ptr(), ptr_or_null(ra), ptr_or_null(rb), out.mutable_data_ptr(), n,
                                   c, hw, fmt == at::MemoryFormat::ChannelsLast, to_dtype(z.scalar_type()),
                                   stream()),
               "epilogue");
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rsb_epilogue_bwd_cuda(const at::Tensor& grad, const at::Tensor& out,
                                                                     const at::Tensor& z, const at::Tensor& r,
                                                                     const at::Tensor& scale,
                                                                     const c10::optional<at::Tensor>& r_scale) {
  check_map(z, "z");
  check_map(out, "out", &z, "z");
  check_map(r, "r", &z, "z");
  RSN_CHECK_ARG(grad.sizes() == z.sizes(), kOp, "grad", "must have the shape of 'z' ", z.sizes(), ", got ",
                grad.sizes());
  check_same_device(grad, z, kOp, "grad", "z");
  const CudaDeviceGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), hw = z.size(2) * z.size(3);
  const at::Tensor a = f32(scale, c, "scale", z), ra = f32(r_scale, c, "r_scale", z);
  RSN_CHECK_ARG(a.defined(), kOp, "scale", "is required");
  const auto fmt = format_of(z);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor gc = grad.to(z.scalar_type()).contiguous(fmt), oc = out.contiguous(fmt), zc = z.contiguous(fmt),
                   rc = r.contiguous(fmt);
  at::Tensor dz = at::empty(z.sizes(), z.options().memory_format(fmt));
  at::Tensor dr = at::empty(z.sizes(), z.options().memory_format(fmt));
  at::Tensor part = at::zeros({rsb_slots(n, hw, cl), 3, c}, z.options().dtype(at::kFloat));
  check_launch(launch_rsb_epilogue_bwd(gc.const_data_ptr(), oc.const_data_ptr(), zc.const_data_ptr(),
                                       rc.const_data_ptr(), a.const_data_ptr<float>(), ptr_or_null(ra),
                                       dz.mutable_data_ptr(), dr.mutable_data_ptr(), part.mutable_data_ptr<float>(),
                                       n, c, hw, cl, to_dtype(z.scalar_type()), stream()),
               "epilogue_bwd");
  return {dz, dr, at::sum(part, {0}, false, at::kDouble)};
}
#endif  // RSN_FAST_WITH_CUDA

TORCH_LIBRARY_FRAGMENT(RSN_FAST_OP_LIBRARY, m) {
  // Kernels of the "cuda" backend of rsn_fast.ops.rsb (cuDNN convolutions in between, from Python).
  m.def("rsb_prologue_cuda(Tensor[] srcs, Tensor? scale, Tensor? shift, bool relu, bool cat, bool channels_last) "
        "-> Tensor");
  m.def("rsb_channel_stats_cuda(Tensor z) -> Tensor");
  m.def("rsb_grad_fold_cuda(Tensor? grad_z, Tensor? grad_sum, Tensor? grad_sumsq, Tensor z) -> Tensor");
  m.def("rsb_prologue_bwd_cuda(Tensor du, Tensor[] srcs, Tensor? scale, Tensor? shift, bool relu, bool cat) "
        "-> (Tensor[], Tensor)");
  m.def("rsb_epilogue_cuda(Tensor z, Tensor scale, Tensor shift, Tensor r, Tensor? r_scale, Tensor? r_shift) "
        "-> Tensor");
  m.def("rsb_epilogue_bwd_cuda(Tensor grad, Tensor out, Tensor z, Tensor r, Tensor scale, Tensor? r_scale) "
        "-> (Tensor, Tensor, Tensor)");
}

#ifdef RSN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(RSN_FAST_OP_LIBRARY, RSN_FAST_CUDA_KEY, m) {
  m.impl("rsb_prologue_cuda", &rsb_prologue_cuda);
  m.impl("rsb_channel_stats_cuda", &rsb_channel_stats_cuda);
  m.impl("rsb_grad_fold_cuda", &rsb_grad_fold_cuda);
  m.impl("rsb_prologue_bwd_cuda", &rsb_prologue_bwd_cuda);
  m.impl("rsb_epilogue_cuda", &rsb_epilogue_cuda);
  m.impl("rsb_epilogue_bwd_cuda", &rsb_epilogue_bwd_cuda);
}
#endif

}  // namespace rsn_fast
