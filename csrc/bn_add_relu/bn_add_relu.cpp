// bn_add_relu: input checks, the CPU kernel, and the launch of the CUDA kernel (bn_add_relu_cuda.cu).
// c10/cuda headers only: ATen/cuda/CUDAContext.h pulls in cuSPARSE/cuBLAS headers that minimal toolkits lack.
#include "bn_add_relu/bn_add_relu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <torch/library.h>

#include "common/checks.h"

#ifdef RSN_FAST_WITH_CUDA
#include "common/cuda_glue.h"

#include "bn_add_relu/bn_add_relu_cuda.h"
#endif

namespace rsn_fast {
namespace {

// Elements per parallel task (torch's own kGrainSize lives in the heavy TensorIterator.h).
constexpr int64_t kGrainSize = 32768;
constexpr const char* kOp = "rsn_fast::bn_add_relu";

struct Prepared {
  at::Tensor x, scale, shift, residual, y;  // residual undefined when absent
  bool channels_last;
  int64_t n, c, hw;
};

// Checks the arguments (messages name them) and brings them into the dense layout the kernels expect.
Prepared prepare(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                 const std::optional<at::Tensor>& residual) {
  check_ndim(x, 4, kOp, "x");
  check_float_dtype(x, kOp, "x");
  const int64_t c = x.size(1);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{scale, "scale"}, {shift, "shift"}}) {
    RSN_CHECK_ARG(t.dim() == 1 && t.size(0) == c, kOp, name, "must have shape (C,) = (", c,
                  ",) to match x of shape ", x.sizes(), ", got ", t.sizes());
    RSN_CHECK_ARG(at::isFloatingType(t.scalar_type()), kOp, name, "must be floating point, got ",
                  t.scalar_type());
    check_same_device(t, x, kOp, name, "x");
  }
  Prepared p;
  p.channels_last = use_channels_last(x);
  const auto mf = p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (residual.has_value()) {
    const auto& r = *residual;
    RSN_CHECK_ARG(r.sizes() == x.sizes(), kOp, "residual", "must have the shape of x ", x.sizes(), ", got ",
                  r.sizes());
    RSN_CHECK_ARG(r.scalar_type() == x.scalar_type(), kOp, "residual", "must have the dtype of x (",
                  x.scalar_type(), "), got ", r.scalar_type());
    check_same_device(r, x, kOp, "residual", "x");
    p.residual = r.contiguous(mf);
  }
  p.x = x.contiguous(mf);
  p.scale = scale.to(at::kFloat).contiguous();
  p.shift = shift.to(at::kFloat).contiguous();
  p.y = at::empty(x.sizes(), x.options().memory_format(mf));
  p.n = x.size(0);
  p.c = c;
  p.hw = x.size(2) * x.size(3);
  return p;
}

template <typename scalar_t>
void cpu_kernel(const Prepared& p, bool relu) {
  const scalar_t* x = p.x.const_data_ptr<scalar_t>();
  const scalar_t* r = p.residual.defined() ? p.residual.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* y = p.y.mutable_data_ptr<scalar_t>();
  const float* scale = p.scale.const_data_ptr<float>();
  const float* shift = p.shift.const_data_ptr<float>();
  const int64_t c = p.c, hw = p.hw;
  auto one = [&](int64_t i, float s, float t) {
    float v = static_cast<float>(x[i]) * s + t;
    if (r) v += static_cast<float>(r[i]);
    if (relu) v = v < 0.f ? 0.f : v;  // keeps NaN, like torch.relu
    y[i] = static_cast<scalar_t>(v);
  };
  if (!p.channels_last) {
    // One (n, c) plane per task: scale and shift are constant along the inner loop.
    const int64_t grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(hw, 1));
    at::parallel_for(0, p.n * c, grain, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const float s = scale[plane % c], t = shift[plane % c];
        for (int64_t i = plane * hw, e = i + hw; i < e; ++i) one(i, s, t);
      }
    });
  } else {
    // One pixel (all C channels) per step.
    const int64_t grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(c, 1));
    at::parallel_for(0, p.n * hw, grain, [&](int64_t begin, int64_t end) {
      for (int64_t pix = begin; pix < end; ++pix) {
        for (int64_t ch = 0; ch < c; ++ch) one(pix * c + ch, scale[ch], shift[ch]);
      }
    });
  }
}

}  // namespace

at::Tensor bn_add_relu_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                           const std::optional<at::Tensor>& residual, bool relu) {
  Prepared p = prepare(x, scale, shift, residual);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.x.scalar_type(), "bn_add_relu_cpu",
                                  [&] { cpu_kernel<scalar_t>(p, relu); });
  return p.y;
}

#ifdef RSN_FAST_WITH_CUDA
at::Tensor bn_add_relu_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                            const std::optional<at::Tensor>& residual, bool relu) {
  const CudaDeviceGuard guard(x.device());
  Prepared p = prepare(x, scale, shift, residual);
  const DType dt = p.x.scalar_type() == at::kFloat ? DType::kFloat32
                   : p.x.scalar_type() == at::kHalf ? DType::kFloat16
                                                    : DType::kBFloat16;
  const cudaError_t err = launch_bn_add_relu(
      p.x.const_data_ptr(), p.scale.const_data_ptr<float>(), p.shift.const_data_ptr<float>(),
      p.residual.defined() ? p.residual.const_data_ptr() : nullptr, p.y.mutable_data_ptr(), p.n, p.c, p.hw,
      p.channels_last, relu, dt, cuda_stream());
  TORCH_CHECK(err == cudaSuccess, kOp, ": CUDA kernel launch failed: ", cuda_error_string(err));
  return p.y;
}
#endif

TORCH_LIBRARY_IMPL(rsn_fast, CPU, m) { m.impl("bn_add_relu", &bn_add_relu_cpu); }

#ifdef RSN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(rsn_fast, RSN_FAST_CUDA_KEY, m) { m.impl(RSN_FAST_CUDA_OP_NAME("bn_add_relu"), &bn_add_relu_cuda); }
#endif

}  // namespace rsn_fast
