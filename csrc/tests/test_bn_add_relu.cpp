// C++ test of the bn_add_relu CPU kernel against a plain loop over the same math, called directly and
// through the dispatcher (which checks that the schema and the CPU registration are linked in).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "bn_add_relu/bn_add_relu.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

// y[n,c,h,w] = relu(x * scale[c] + shift[c] + residual), one element at a time in float32.
at::Tensor plain(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& res,
                 bool relu) {
  auto xf = x.to(at::kFloat).contiguous(), rf = res.defined() ? res.to(at::kFloat).contiguous() : res;
  auto y = at::empty_like(xf);
  auto xa = xf.accessor<float, 4>();
  auto ya = y.accessor<float, 4>();
  auto sa = scale.accessor<float, 1>();
  auto ta = shift.accessor<float, 1>();
  for (int64_t n = 0; n < x.size(0); ++n)
    for (int64_t c = 0; c < x.size(1); ++c)
      for (int64_t h = 0; h < x.size(2); ++h)
        for (int64_t w = 0; w < x.size(3); ++w) {
          float v = xa[n][c][h][w] * sa[c] + ta[c];
          if (rf.defined()) v += rf.accessor<float, 4>()[n][c][h][w];
          ya[n][c][h][w] = relu ? std::max(v, 0.f) : v;
        }
  return y;
}

void check_case(at::ScalarType dtype, bool channels_last, bool with_residual, bool relu) {
  const std::string name = std::string(c10::toString(dtype)) + (channels_last ? " channels_last" : " contiguous") +
                           (with_residual ? " +residual" : "") + (relu ? " relu" : "");
  auto opts = at::TensorOptions().dtype(dtype);
  auto x = at::randn({2, 17, 7, 5}).to(dtype);
  at::Tensor res = with_residual ? at::randn({2, 17, 7, 5}).to(dtype) : at::Tensor();
  if (channels_last) {
    x = x.contiguous(at::MemoryFormat::ChannelsLast);
    if (res.defined()) res = res.contiguous(at::MemoryFormat::ChannelsLast);
  }
  auto scale = at::rand({17}) + 0.5;
  auto shift = at::randn({17});
  const double tol = dtype == at::kFloat ? 1e-5 : dtype == at::kHalf ? 2e-3 : 1.6e-2;
  auto expected = plain(x, scale, shift, res, relu);

  auto y = rsn_fast::bn_add_relu_cpu(x, scale, shift, res.defined() ? std::optional<at::Tensor>(res) : std::nullopt,
                                     relu);
  expect(y.scalar_type() == dtype, name + ": dtype");
  expect(y.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous),
         name + ": layout");
  expect(at::allclose(y.to(at::kFloat), expected, tol, tol), name + ": direct call values");

  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("rsn_fast::bn_add_relu", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const std::optional<at::Tensor>&, bool)>();
  auto y2 = op.call(x, scale, shift, res.defined() ? std::optional<at::Tensor>(res) : std::nullopt, relu);
  expect(at::equal(y2, y), name + ": dispatcher call equals direct call");
  (void)opts;
}

void check_errors() {
  auto x = at::randn({2, 4, 3, 3});
  bool threw = false;
  try {
    rsn_fast::bn_add_relu_cpu(x, at::rand({3}), at::rand({4}), std::nullopt, true);
  } catch (const c10::ValueError& e) {
    threw = std::string(e.what()).find("'scale'") != std::string::npos;
  }
  expect(threw, "wrong scale shape raises a ValueError naming 'scale'");
}

}  // namespace

int main() {
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16})
    for (bool cl : {false, true})
      for (bool r : {false, true})
        for (bool relu : {false, true}) check_case(dtype, cl, r, relu);
  check_errors();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("test_bn_add_relu: all checks passed\n");
  return 0;
}
