// Schemas of every rsn_fast op, in one place. Implementations register themselves with TORCH_LIBRARY_IMPL
// next to their kernels (csrc/<op>/<op>.cpp); the Python side adds fake (meta) and autograd rules.
// To add an op, insert one m.def line below (keep the list sorted by op name).
#include <torch/library.h>

TORCH_LIBRARY(rsn_fast, m) {
  // y = relu(x * scale[c] + shift[c] (+ residual)); folded inference BatchNorm + residual add + ReLU.
#define RSN_BN_ADD_RELU_SCHEMA "(Tensor x, Tensor scale, Tensor shift, Tensor? residual=None, bool relu=True) -> Tensor"
  m.def("bn_add_relu" RSN_BN_ADD_RELU_SCHEMA);
#ifdef RSN_FAST_CUDA_EMULATION  // the CUDA kernel on CPU tensors (csrc/emulation)
  m.def("bn_add_relu_emulated_cuda" RSN_BN_ADD_RELU_SCHEMA);
#endif
  // Depthwise convolution, stride 1, odd k <= 31; wrapped by the Python op rsn_fast::depthwise_conv2d.
  m.def("depthwise_conv2d_bwd_cuda(Tensor grad, Tensor x, Tensor weight, int padding, bool need_input, "
        "bool need_weight, bool need_bias) -> (Tensor, Tensor, Tensor)");
  m.def("depthwise_conv2d_fwd_cuda(Tensor x, Tensor weight, Tensor? bias, int padding) -> Tensor");
  m.def("depthwise_conv2d_stats_cuda(Tensor x, Tensor weight, int padding) -> (Tensor, Tensor)");
  // Fused PRM spatial gate kernels (csrc/prm_gate); phases orchestrated by rsn_fast/ops/prm_gate/fused.py.
  m.def("prm_gate_bn_d_bwd_cuda(Tensor z, Tensor dp, Tensor cv, Tensor pw) -> Tensor");
  m.def("prm_gate_bn_d_bwd_sums_cuda(Tensor z, Tensor dp, Tensor cv, Tensor pw) -> Tensor");
  m.def("prm_gate_eval_cuda(Tensor o1, Tensor o2, Tensor u, Tensor w_folded, Tensor shift_d, Tensor pw, "
        "Tensor bnp) -> Tensor");
  m.def("prm_gate_gate_bwd_cuda(Tensor grad, Tensor o1, Tensor o2, Tensor p, Tensor bnp4) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("prm_gate_gate_cuda(Tensor p, Tensor bnp, Tensor o1, Tensor o2) -> Tensor");
  m.def("prm_gate_pointwise_cuda(Tensor z, Tensor scale_shift, Tensor pw) -> (Tensor, Tensor)");
}
