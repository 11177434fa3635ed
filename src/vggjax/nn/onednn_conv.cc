// oneDNN 2-D convolutions (stride 1, symmetric zero padding, float32, NHWC / HWIO) as XLA FFI
// handlers for the CPU: forward (plain, or with the bias and a ReLU fused into the primitive as
// oneDNN post-ops), backward-data and backward-weights, and the ReLU's backward from its output
// (oneDNN's eltwise backward). Built, loaded and registered by vggjax/nn/onednn_build.py; wrapped
// as JAX ops in vggjax/nn/onednn.py.
//
// * Primitives are built once per shape and cached (mutex-protected map); they are run with a
//   user-provided scratchpad held per calling thread, since XLA calls a handler from several
//   threads and oneDNN's own scratchpad belongs to the thread that made the primitive.
// * Weights: oneDNN picks their layout (format_tag::any); the HWIO weights are reordered into it
//   (forward, backward-data) or out of it (backward-weights) on every call. Plain HWIO weights
//   send the backward passes to a GEMM fallback many times slower.
// * Threads: each call runs oneDNN's OpenMP on vggjax_onednn_threads() threads, set per calling
//   thread (omp_set_num_threads) before a primitive is made or run.
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

int g_threads = 0;  // 0: OpenMP's default

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A 64-byte-aligned buffer that grows on demand: one per thread and purpose.
struct Scratch {
  void* data = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(data); }
  void* get(size_t n) {
    if (n > size) {
      std::free(data);
      size = (n + 63) / 64 * 64;
      data = std::aligned_alloc(64, size);
    }
    return data;
  }
};

thread_local Scratch t_scratchpad, t_weights;

// Shape key: kind, N, H, W, I, O, kh, kw, pad, flags.
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int>;

struct Conv {
  dnnl::primitive prim;
  memory::desc src, dst, weights, bias;  // weights: the primitive's own layout
  memory::desc user_weights;             // HWIO
  bool reorder = false;
  dnnl::reorder weights_reorder;
  size_t scratchpad_bytes = 0;
};

enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };
enum Flags { kBias = 1, kRelu = 2 };

struct Shape {
  int64_t n, h, w, i, o, kh, kw, pad;
};

std::mutex g_mutex;
std::map<Key, std::unique_ptr<Conv>> g_cache;

dnnl::convolution_forward::primitive_desc forward_pd(const Shape& s, int flags) {
  memory::dims src{s.n, s.i, s.h, s.w}, dst{s.n, s.o, s.h, s.w}, wei{s.o, s.i, s.kh, s.kw};
  memory::dims strides{1, 1}, pad{s.pad, s.pad};
  auto src_md = memory::desc(src, dt::f32, tag::nhwc);
  auto dst_md = memory::desc(dst, dt::f32, tag::nhwc);
  auto wei_md = memory::desc(wei, dt::f32, tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (flags & kRelu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  if (flags & kBias) {
    auto bias_md = memory::desc({s.o}, dt::f32, tag::a);
    return {cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
            src_md, wei_md, bias_md, dst_md, strides, pad, pad, attr};
  }
  return {cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          src_md, wei_md, dst_md, strides, pad, pad, attr};
}

std::unique_ptr<Conv> make(Kind kind, const Shape& s, int flags) {
  auto conv = std::make_unique<Conv>();
  memory::dims wei{s.o, s.i, s.kh, s.kw}, strides{1, 1}, pad{s.pad, s.pad};
  conv->user_weights = memory::desc(wei, dt::f32, tag::hwio);
  auto fwd = forward_pd(s, kind == kForward ? flags : 0);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (kind == kForward) {
    conv->prim = dnnl::convolution_forward(fwd);
    conv->src = fwd.src_desc();
    conv->dst = fwd.dst_desc();
    conv->weights = fwd.weights_desc();
    conv->scratchpad_bytes = fwd.scratchpad_desc().get_size();
  } else if (kind == kBackwardData) {
    auto wei_md = memory::desc(wei, dt::f32, tag::any);
    dnnl::convolution_backward_data::primitive_desc pd(
        cpu_engine(), dnnl::algorithm::convolution_direct, fwd.src_desc(), wei_md, fwd.dst_desc(),
        strides, pad, pad, fwd, attr);
    conv->prim = dnnl::convolution_backward_data(pd);
    conv->src = pd.diff_src_desc();
    conv->dst = pd.diff_dst_desc();
    conv->weights = pd.weights_desc();
    conv->scratchpad_bytes = pd.scratchpad_desc().get_size();
  } else {
    auto wei_md = memory::desc(wei, dt::f32, tag::any);
    dnnl::convolution_backward_weights::primitive_desc pd(
        cpu_engine(), dnnl::algorithm::convolution_direct, fwd.src_desc(), wei_md, fwd.dst_desc(),
        strides, pad, pad, fwd, attr);
    conv->prim = dnnl::convolution_backward_weights(pd);
    conv->src = pd.src_desc();
    conv->dst = pd.diff_dst_desc();
    conv->weights = pd.diff_weights_desc();
    conv->scratchpad_bytes = pd.scratchpad_desc().get_size();
  }
  conv->reorder = conv->weights != conv->user_weights;
  if (conv->reorder) {
    auto eng = cpu_engine();
    conv->weights_reorder = kind == kBackwardWeights
                                ? dnnl::reorder(dnnl::reorder::primitive_desc(
                                      eng, conv->weights, eng, conv->user_weights))
                                : dnnl::reorder(dnnl::reorder::primitive_desc(
                                      eng, conv->user_weights, eng, conv->weights));
  }
  return conv;
}

Conv& lookup(Kind kind, const Shape& s, int flags) {
  Key key{kind, s.n, s.h, s.w, s.i, s.o, s.kh, s.kw, s.pad, flags};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& slot = g_cache[key];
  if (!slot) slot = make(kind, s, flags);
  return *slot;
}

// Runs `kind` on NHWC activations `act` (x, or dx for backward-data), HWIO weights `hwio`
// (dw for backward-weights) and NHWC `grad` (y, or dy).
ffi::Error run(Kind kind, const Shape& s, int flags, float* act, float* hwio, float* grad,
               float* bias) {
  try {
    if (g_threads > 0) omp_set_num_threads(g_threads);
    Conv& c = lookup(kind, s, flags);
    auto eng = cpu_engine();
    thread_local dnnl::stream stream(cpu_engine());
    memory user_w(c.user_weights, eng, hwio);
    memory w = c.reorder ? memory(c.weights, eng, t_weights.get(c.weights.get_size())) : user_w;
    memory pad(memory::desc({static_cast<int64_t>(c.scratchpad_bytes)}, dt::u8, tag::a), eng,
               t_scratchpad.get(c.scratchpad_bytes ? c.scratchpad_bytes : 64));
    memory a(c.src, eng, act), g(c.dst, eng, grad);
    if (kind == kForward) {
      if (c.reorder) c.weights_reorder.execute(stream, user_w, w);
      std::unordered_map<int, memory> args{
          {DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, g}, {DNNL_ARG_SCRATCHPAD, pad}};
      if (flags & kBias) args.insert({DNNL_ARG_BIAS, memory(memory::desc({s.o}, dt::f32, tag::a), eng, bias)});
      c.prim.execute(stream, args);
    } else if (kind == kBackwardData) {
      if (c.reorder) c.weights_reorder.execute(stream, user_w, w);
      c.prim.execute(stream, {{DNNL_ARG_DIFF_SRC, a},
                              {DNNL_ARG_WEIGHTS, w},
                              {DNNL_ARG_DIFF_DST, g},
                              {DNNL_ARG_SCRATCHPAD, pad}});
    } else {
      c.prim.execute(stream, {{DNNL_ARG_SRC, a},
                              {DNNL_ARG_DIFF_WEIGHTS, w},
                              {DNNL_ARG_DIFF_DST, g},
                              {DNNL_ARG_SCRATCHPAD, pad}});
      if (c.reorder) c.weights_reorder.execute(stream, w, user_w);
    }
    stream.wait();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("vggjax oneDNN conv: ") + e.what());
  }
}

template <typename B>
ffi::Error shape(const B& x, int64_t kh, int64_t kw, int64_t o, int64_t pad, Shape* s) {
  auto d = x.dimensions();
  if (d.size() != 4) return ffi::Error::InvalidArgument("vggjax oneDNN conv: rank-4 NHWC input expected");
  *s = Shape{d[0], d[1], d[2], d[3], o, kh, kw, pad};
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, F32Out y, int64_t pad) {
  auto wd = w.dimensions();
  Shape s;
  if (auto e = shape(x, wd[0], wd[1], wd[3], pad, &s); e.failure()) return e;
  return run(kForward, s, 0, x.typed_data(), w.typed_data(), y->typed_data(), nullptr);
}

// y = relu(conv(x, w) + b), y[N, H, W, O] from x[N, H, W, I], w[kh, kw, I, O] and b[O], in one
// primitive (bias and ReLU are oneDNN post-ops: no extra pass over y).
ffi::Error ForwardBiasRelu(F32 x, F32 w, F32 b, F32Out y, int64_t pad) {
  auto wd = w.dimensions();
  Shape s;
  if (auto e = shape(x, wd[0], wd[1], wd[3], pad, &s); e.failure()) return e;
  return run(kForward, s, kBias | kRelu, x.typed_data(), w.typed_data(), y->typed_data(), b.typed_data());
}

// dx[N, H, W, I] from dy[N, H, W, O] and w[kh, kw, I, O].
ffi::Error BackwardData(F32 dy, F32 w, F32Out dx, int64_t pad) {
  auto wd = w.dimensions();
  auto d = dy.dimensions();
  Shape s{d[0], d[1], d[2], wd[2], wd[3], wd[0], wd[1], pad};
  return run(kBackwardData, s, 0, dx->typed_data(), w.typed_data(), dy.typed_data(), nullptr);
}

// dw[kh, kw, I, O] from x[N, H, W, I] and dy[N, H, W, O].
ffi::Error BackwardWeights(F32 x, F32 dy, F32Out dw, int64_t pad) {
  auto wd = dw->dimensions();
  Shape s;
  if (auto e = shape(x, wd[0], wd[1], wd[3], pad, &s); e.failure()) return e;
  return run(kBackwardWeights, s, 0, x.typed_data(), dw->typed_data(), dy.typed_data(), nullptr);
}

// dz = dy where y > 0, else 0 (the ReLU's input gradient from its output y), elementwise over
// any shape. A custom call rather than an XLA fusion on purpose: see vggjax/nn/onednn.py.
ffi::Error ReluBackward(F32 dy, F32 y, F32Out dz) {
  try {
    if (g_threads > 0) omp_set_num_threads(g_threads);
    auto md = memory::desc({static_cast<int64_t>(dy.element_count())}, dt::f32, tag::a);
    struct Relu {
      dnnl::eltwise_backward prim;
      size_t scratchpad_bytes;
    };
    static std::mutex mutex;
    static std::map<int64_t, Relu> cache;
    Relu relu;
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto found = cache.find(md.get_size());
      if (found == cache.end()) {
        auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::eltwise_forward::primitive_desc hint(cpu_engine(), dnnl::prop_kind::forward_training, alg,
                                                   md, md, 0.f, 0.f, attr);
        dnnl::eltwise_backward::primitive_desc pd(cpu_engine(), alg, md, md, md, 0.f, 0.f, hint, attr);
        found = cache.emplace(md.get_size(), Relu{dnnl::eltwise_backward(pd), pd.scratchpad_desc().get_size()}).first;
      }
      relu = found->second;
    }
    size_t scratchpad_bytes = relu.scratchpad_bytes;
    thread_local dnnl::stream stream(cpu_engine());
    auto eng = cpu_engine();
    relu.prim.execute(stream, {{DNNL_ARG_DST, memory(md, eng, y.typed_data())},
                          {DNNL_ARG_DIFF_DST, memory(md, eng, dy.typed_data())},
                          {DNNL_ARG_DIFF_SRC, memory(md, eng, dz->typed_data())},
                          {DNNL_ARG_SCRATCHPAD,
                           memory(memory::desc({static_cast<int64_t>(scratchpad_bytes)}, dt::u8, tag::a), eng,
                                  t_scratchpad.get(scratchpad_bytes ? scratchpad_bytes : 64))}});
    stream.wait();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("vggjax oneDNN ReLU backward: ") + e.what());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(vggjax_relu_bwd, ReluBackward,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(vggjax_conv_fwd, Forward,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("pad"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    vggjax_conv_bias_relu_fwd, ForwardBiasRelu,
    ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("pad"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(vggjax_conv_bwd_data, BackwardData,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("pad"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(vggjax_conv_bwd_weights, BackwardWeights,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("pad"));

#define EXPORT __attribute__((visibility("default")))
extern "C" {
// OpenMP threads per call (0: OpenMP's default); call before the first convolution.
EXPORT void vggjax_onednn_set_threads(int n) { g_threads = n; }
EXPORT int vggjax_onednn_threads() { return g_threads; }
// oneDNN's version as major * 10000 + minor * 100 + patch.
EXPORT int vggjax_onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
}
