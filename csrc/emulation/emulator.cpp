// The CPU CUDA emulator (see README.md). One grid runs on the calling thread, block after block; a block's threads
// are fibers. A fiber runs until it reaches __syncthreads, a warp shuffle, or its end; the scheduler then
// releases a warp whose lanes all wait at a shuffle, or the block when all its threads wait at the barrier, and
// reports a deadlock when neither can happen. RSN_FAST_EMULATION_REVERSE=1 runs threads (and blocks) in reverse
// order, which changes what a missing barrier lets a thread see.
//
// Fibers switch with a 10-instruction stack switch on x86-64 (ucontext elsewhere): glibc's swapcontext makes a
// rt_sigprocmask system call per switch, and ASan's swapcontext interceptor clears the shadow of the whole target
// stack per switch (measured: ~95% of the emulated RSN-18 training step under ASan went to these two). Under ASan
// every switch is announced with __sanitizer_{start,finish}_switch_fiber, so ASan knows the current stack.
#ifdef RSN_FAST_CUDA_EMULATION

#include "emulation/emulator.h"

#include <dlfcn.h>
#include <elf.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace rsn_emu {

RSN_EMU_TLS uint3 t_thread_idx;
RSN_EMU_TLS uint3 t_block_idx;
RSN_EMU_TLS dim3 t_block_dim;
RSN_EMU_TLS dim3 t_grid_dim;

namespace {

constexpr size_t kStackBytes = 128 * 1024;
constexpr unsigned char kPoison = 0xFF;  // all-ones: NaN as float32/float64/float16/bfloat16, -1 as an integer

#if defined(__x86_64__)
// rsn_emu_switch(&from_sp, to_sp): saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores its stack pointer in *from_sp, and resumes the context saved at to_sp (System V ABI: everything
// else is caller-saved). A new context's stack is laid out by start_context as if it had called rsn_emu_switch.
extern "C" void rsn_emu_switch(void** from_sp, void* to_sp);
asm(R"(
    .text
    .p2align 4
    .globl rsn_emu_switch
    .hidden rsn_emu_switch
    .type rsn_emu_switch, @function
rsn_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size rsn_emu_switch, .-rsn_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

struct Context {
  void* sp = nullptr;
  void* fake_stack = nullptr;  // ASan's fake stack of this context while it is switched out
  const void* stack = nullptr;
  size_t stack_size = 0;
};

// A context that starts entry() on [stack, stack + bytes) when first resumed; entry must never return.
void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
#if defined(__SANITIZE_ADDRESS__)
  // A fiber's last frames (fiber_main, leave_fiber) never return, so their red zones stay poisoned at the top of
  // the stack, which the next block's fiber reuses: clear them (4 KiB holds them many times over).
  ASAN_UNPOISON_MEMORY_REGION(stack + bytes - 4096, 4096);
#endif
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;                                      // entry's return address (never used): rsp = 8 mod 16 there
  *--slot = reinterpret_cast<uint64_t>(entry);      // rsn_emu_switch's ret jumps to entry
  for (int i = 0; i < 6; ++i) *--slot = 0;          // rbp rbx r12 r13 r14 r15
  uint32_t mxcsr = 0;
  uint16_t fpcw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  *--slot = uint64_t{mxcsr} | (uint64_t{fpcw} << 32);  // the current floating-point modes
  c.sp = slot;
  c.stack = stack;
  c.stack_size = bytes;
}

inline void raw_switch(Context& from, Context& to) { rsn_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
  void* fake_stack = nullptr;
  const void* stack = nullptr;
  size_t stack_size = 0;
};

void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
  c.stack = stack;
  c.stack_size = bytes;
}

inline void raw_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// Switches from `from` (the running context) to `to`; returns when something switches back to `from`. exiting:
// `from` never runs again (ASan then frees its fake stack).
inline void switch_context(Context& from, Context& to, bool exiting = false) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &from.fake_stack, to.stack, to.stack_size);
  raw_switch(from, to);
  __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#else
  (void)exiting;
  raw_switch(from, to);
#endif
}

enum class State { kRunnable, kBarrier, kShuffle, kDone };

struct Fiber {
  Context ctx;
  State state;
  unsigned shfl_mask;
  ShuffleKind shfl_kind;
  int shfl_arg, shfl_width;
  uint64_t shfl_in, shfl_out;
};

struct Block {
  const LaunchSite* site;
  int threads;
  std::vector<Fiber> fibers;
  Context scheduler;  // the launching thread's own stack
  int current = -1;
  int pass = -1;  // the position of `current` in this pass over the threads (reverse: from the last thread)
  int done = 0;
  bool reverse = false;
  bool from_scheduler = false;  // ASan: the scheduler is switching to a new fiber (which learns its stack)
  void (*body)(void*);
  void* ctx;
};

RSN_EMU_TLS Block* t_block = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> t_stacks;
thread_local std::vector<unsigned char> t_dynamic;

std::string where(const LaunchSite& s) {
  std::ostringstream o;
  o << "kernel " << s.kernel << " launched at " << s.file << ":" << s.line;
  return o.str();
}

[[noreturn]] void fail(const LaunchSite& s, const std::string& what) {
  throw std::runtime_error("rsn_fast CUDA emulation: " + where(s) + ": " + what);
}

std::string base_name(const std::string& path) {
  const auto p = path.find_last_of('/');
  return p == std::string::npos ? path : path.substr(p + 1);
}

std::string kernel_base(const char* expr) {
  std::string s(expr);
  s = s.substr(0, s.find('<'));
  while (!s.empty() && s.back() == ' ') s.pop_back();
  const auto p = s.find_last_of(':');
  return p == std::string::npos ? s : s.substr(p + 1);
}

std::mutex g_mu;
std::map<std::pair<std::string, std::string>, int>& launch_bounds() {
  static std::map<std::pair<std::string, std::string>, int> m;
  return m;
}
std::map<const void*, int> g_max_dynamic;        // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel
// A kernel's __shared__ variables: its function-local statics (device code has no other kind), found by name in
// this library's ELF symbol table (GCC ignores section attributes on template statics, so no section can hold them).
struct SharedVars {
  size_t bytes = 0;
  std::vector<std::pair<char*, size_t>> vars;
};
std::map<const void*, SharedVars> g_shared_vars;
std::deque<LaunchRecord> g_launches;
constexpr size_t kMaxRecords = 4096;

// The static shared memory of `kernel`: the local statics `_ZZ<kernel's mangled name minus _Z>E<name>`.
const SharedVars& shared_vars(const LaunchSite& site, const void* kernel) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    const auto it = g_shared_vars.find(kernel);
    if (it != g_shared_vars.end()) return it->second;
  }
  Dl_info info{};
  if (dladdr(kernel, &info) == 0 || info.dli_fname == nullptr) fail(site, "cannot locate the kernel (dladdr)");
  // The library's image, read once (a kernel's first launch used to read the whole file again)
  static std::mutex img_mu;
  static std::string img_name, img;
  std::lock_guard<std::mutex> img_lock(img_mu);
  if (img_name != info.dli_fname) {
    std::ifstream f(info.dli_fname, std::ios::binary);
    img.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    img_name = info.dli_fname;
  }
  if (img.size() < sizeof(Elf64_Ehdr)) fail(site, std::string("cannot read ") + info.dli_fname);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(img.data());
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(img.data() + eh->e_shoff);
  const Elf64_Shdr* symtab = nullptr;
  for (int i = 0; i < eh->e_shnum; ++i)
    if (sh[i].sh_type == SHT_SYMTAB) symtab = &sh[i];
  if (symtab == nullptr) fail(site, "the extension has no symbol table (stripped?): cannot find shared memory");
  const auto* syms = reinterpret_cast<const Elf64_Sym*>(img.data() + symtab->sh_offset);
  const size_t nsyms = symtab->sh_size / sizeof(Elf64_Sym);
  const char* strtab = img.data() + sh[symtab->sh_link].sh_offset;
  char* base = static_cast<char*>(info.dli_fbase);
  const auto addr = static_cast<Elf64_Addr>(static_cast<const char*>(kernel) - base);
  std::string enc;
  for (size_t i = 0; i < nsyms && enc.empty(); ++i) {
    const char* name = strtab + syms[i].st_name;
    if (ELF64_ST_TYPE(syms[i].st_info) == STT_FUNC && syms[i].st_value == addr && std::strncmp(name, "_Z", 2) == 0)
      enc = name + 2;
  }
  if (enc.empty()) fail(site, "cannot find the kernel in the symbol table: cannot find its shared memory");
  const std::string prefix = "_ZZ" + enc + "E";
  SharedVars sv;
  for (size_t i = 0; i < nsyms; ++i) {
    const char* name = strtab + syms[i].st_name;
    if (ELF64_ST_TYPE(syms[i].st_info) != STT_OBJECT || std::strncmp(name, prefix.c_str(), prefix.size()) != 0)
      continue;
    sv.vars.emplace_back(base + syms[i].st_value, syms[i].st_size);
    sv.bytes += syms[i].st_size;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  return g_shared_vars.emplace(kernel, std::move(sv)).first->second;
}

void set_indices(int linear, const dim3& block) {
  t_thread_idx.x = linear % block.x;
  t_thread_idx.y = (linear / block.x) % block.y;
  t_thread_idx.z = linear / (block.x * block.y);
}

// The next runnable thread of this pass after `current` (made current, its indices set), or -1: the pass is over.
int advance(Block& b) {
  while (++b.pass < b.threads) {
    const int i = b.reverse ? b.threads - 1 - b.pass : b.pass;
    if (b.fibers[i].state != State::kRunnable) continue;
    b.current = i;
    set_indices(i, t_block_dim);
    return i;
  }
  b.current = -1;
  return -1;
}

// Leaves the running fiber (in state s) for the next runnable thread of the pass, directly (one switch, as a
// scheduler round trip would resume that same thread), or for the scheduler at the end of the pass; returns when
// something resumes this fiber.
void leave_fiber(State s, bool exiting) {
  Block* b = t_block;
  Fiber& f = b->fibers[b->current];
  f.state = s;
  const int next = advance(*b);
  b->from_scheduler = false;
  switch_context(f.ctx, next >= 0 ? b->fibers[next].ctx : b->scheduler, exiting);
}

[[noreturn]] void fiber_main() {
  Block* b = t_block;
#if defined(__SANITIZE_ADDRESS__)
  // The first switch into this fiber; from the scheduler (the first of a grid's fibers always is), ASan reports
  // the scheduler's stack here, which the fibers need to switch back to it.
  const void* from = nullptr;
  size_t from_size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &from, &from_size);
  if (b->from_scheduler) {
    b->scheduler.stack = from;
    b->scheduler.stack_size = from_size;
  }
#endif
  b->body(b->ctx);
  ++b->done;
  leave_fiber(State::kDone, /*exiting=*/true);
  __builtin_unreachable();
}

// Back to the scheduler (possibly through other threads of the pass); returns when this fiber is resumed.
void yield_to_scheduler(State s) { leave_fiber(s, /*exiting=*/false); }

// Releases the lanes of each warp whose existing lanes all wait at a shuffle; false when none could be.
bool release_shuffles(Block& b) {
  bool any = false;
  for (int w0 = 0; w0 < b.threads; w0 += 32) {
    const int lanes = std::min(32, b.threads - w0);
    bool all = true;
    for (int l = 0; l < lanes && all; ++l) all = b.fibers[w0 + l].state == State::kShuffle;
    if (!all) continue;
    const Fiber& first = b.fibers[w0];
    for (int l = 0; l < lanes; ++l) {
      const Fiber& f = b.fibers[w0 + l];
      if (f.shfl_mask != first.shfl_mask || f.shfl_kind != first.shfl_kind || f.shfl_width != first.shfl_width)
        fail(*b.site, "the lanes of warp " + std::to_string(w0 / 32) + " meet at different shuffles (mask/kind/width)");
    }
    const uint64_t want = lanes == 32 ? 0xffffffffull : ((1ull << lanes) - 1);
    if (first.shfl_mask != want)
      fail(*b.site, "shuffle mask does not name exactly the warp's " + std::to_string(lanes) + " lanes (partial-warp "
                    "masks are not emulated)");
    for (int l = 0; l < lanes; ++l) {
      Fiber& f = b.fibers[w0 + l];
      const int wdt = f.shfl_width, seg = l - l % wdt;
      int src = l;
      switch (f.shfl_kind) {
        case ShuffleKind::kXor: src = l ^ f.shfl_arg; break;
        case ShuffleKind::kDown: src = l + f.shfl_arg; break;
        case ShuffleKind::kUp: src = l - f.shfl_arg; break;
        case ShuffleKind::kIndex: src = seg + (f.shfl_arg % wdt); break;
      }
      if (src < seg || src >= seg + wdt || src >= lanes) src = l;  // out of the segment: own value
      f.shfl_out = b.fibers[w0 + src].shfl_in;
    }
    for (int l = 0; l < lanes; ++l) b.fibers[w0 + l].state = State::kRunnable;
    any = true;
  }
  return any;
}

[[noreturn]] void report_deadlock(const Block& b) {
  int barrier = 0, shuffle = 0, done = 0;
  for (const auto& f : b.fibers) {
    barrier += f.state == State::kBarrier;
    shuffle += f.state == State::kShuffle;
    done += f.state == State::kDone;
  }
  std::ostringstream o;
  o << "deadlock in block (" << t_block_idx.x << ", " << t_block_idx.y << ", " << t_block_idx.z << "): ";
  if (shuffle > 0)
    o << "a warp shuffle was reached by only part of a warp (" << shuffle << " lanes wait at a shuffle, ";
  else
    o << "__syncthreads was reached by only part of the block (";
  o << barrier << " of " << b.threads << " threads wait at __syncthreads, " << done << " have exited)";
  fail(*b.site, o.str());
}

void run_block(Block& b) {
  for (int i = 0; i < b.threads; ++i) {
    Fiber& f = b.fibers[i];
    start_context(f.ctx, t_stacks[i].get(), kStackBytes, fiber_main);
    f.state = State::kRunnable;
  }
  b.done = 0;
  while (true) {
    // One pass: every runnable thread in order, each until it waits or exits; a fiber hands over to the next.
    b.pass = -1;
    const int first = advance(b);
    if (first >= 0) {
      b.from_scheduler = true;
      switch_context(b.scheduler, b.fibers[first].ctx);
    }
    b.current = -1;
    if (b.done == b.threads) break;
    if (release_shuffles(b)) continue;
    int at_barrier = 0;
    for (const auto& f : b.fibers) at_barrier += f.state == State::kBarrier;
    if (at_barrier != b.threads) report_deadlock(b);
    for (auto& f : b.fibers) f.state = State::kRunnable;
  }
}

void check_launch(const LaunchSite& s, dim3 grid, dim3 block, size_t dyn, size_t stat, const void* kernel) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
    fail(s, "empty grid or block (" + std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" +
                std::to_string(grid.z) + " blocks of " + std::to_string(threads) + " threads)");
  if (threads > kMaxThreadsPerBlock || block.z > 64)
    fail(s, std::to_string(threads) + " threads per block (" + std::to_string(block.x) + "x" +
                std::to_string(block.y) + "x" + std::to_string(block.z) + ") > " +
                std::to_string(kMaxThreadsPerBlock) + " (or block.z > 64)");
  if (grid.y > kMaxGridYZ || grid.z > kMaxGridYZ)
    fail(s, "grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " + std::to_string(grid.z) +
                ") has grid.y or grid.z > 65535");
  if (grid.x > 0x7fffffffu) fail(s, "grid.x > 2^31 - 1");
  int bound = 0, max_dyn = -1;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    const auto it = launch_bounds().find({base_name(s.file), kernel_base(s.kernel)});
    if (it != launch_bounds().end()) bound = it->second;
    const auto jt = g_max_dynamic.find(kernel);
    if (jt != g_max_dynamic.end()) max_dyn = jt->second;
  }
  if (bound > 0 && threads > static_cast<uint64_t>(bound))
    fail(s, std::to_string(threads) + " threads per block > the kernel's __launch_bounds__(" + std::to_string(bound) +
                ")");
  if (stat + dyn > kOptinSharedPerBlock)
    fail(s, "static + dynamic shared memory " + std::to_string(stat) + " + " + std::to_string(dyn) +
                " bytes > the opt-in maximum of sm_70 (96 KiB)");
  const size_t allowed = max_dyn >= 0 ? static_cast<size_t>(max_dyn) : kDefaultSharedPerBlock - stat;
  if (stat + dyn > kDefaultSharedPerBlock && dyn > allowed)
    fail(s, "static + dynamic shared memory " + std::to_string(stat) + " + " + std::to_string(dyn) +
                " bytes > 48 KiB without cudaFuncAttributeMaxDynamicSharedMemorySize set to at least " +
                std::to_string(dyn));
  if (max_dyn >= 0 && dyn > allowed)
    fail(s, "dynamic shared memory " + std::to_string(dyn) + " bytes > the kernel's "
            "cudaFuncAttributeMaxDynamicSharedMemorySize " + std::to_string(max_dyn));
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace

void run_grid(const LaunchSite& site, dim3 grid, dim3 block, size_t dyn, const void* kernel, void (*body)(void*),
              void* ctx) {
  if (t_block != nullptr) fail(site, "a kernel launched from inside a kernel (dynamic parallelism) is not emulated");
  const SharedVars& shared = shared_vars(site, kernel);
  const size_t stat = shared.bytes;
  check_launch(site, grid, block, dyn, stat, kernel);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_launches.push_back(LaunchRecord{site.kernel, site.file, site.line, {grid.x, grid.y, grid.z},
                                      {block.x, block.y, block.z}, dyn, stat});
    if (g_launches.size() > kMaxRecords) g_launches.pop_front();
  }
  const bool reverse = env_flag("RSN_FAST_EMULATION_REVERSE");
  Block b;
  b.site = &site;
  b.threads = static_cast<int>(block.x * block.y * block.z);
  b.fibers.resize(b.threads);
  b.body = body;
  b.ctx = ctx;
  b.reverse = reverse;
  while (t_stacks.size() < static_cast<size_t>(b.threads)) t_stacks.emplace_back(new char[kStackBytes]);
  t_dynamic.assign(dyn + 16, kPoison);
  void* dyn_ptr = t_dynamic.data() + (16 - reinterpret_cast<uintptr_t>(t_dynamic.data()) % 16) % 16;
  t_grid_dim = grid;
  t_block_dim = block;
  t_block = &b;
  struct Reset {
    int threads;
    ~Reset() {
      t_block = nullptr;
#if defined(__SANITIZE_ADDRESS__)
      // A deadlock or rejected shuffle abandons fibers mid-call: their frames' red zones would stay poisoned on
      // stacks that the next launch reuses.
      if (std::uncaught_exceptions() > 0)
        for (int i = 0; i < threads; ++i) ASAN_UNPOISON_MEMORY_REGION(t_stacks[i].get(), kStackBytes);
#endif
    }
  } reset{b.threads};
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t id = reverse ? blocks - 1 - k : k;
    t_block_idx.x = static_cast<unsigned>(id % grid.x);
    t_block_idx.y = static_cast<unsigned>((id / grid.x) % grid.y);
    t_block_idx.z = static_cast<unsigned>(id / (uint64_t{grid.x} * grid.y));
    for (const auto& [ptr, bytes] : shared.vars) std::memset(ptr, kPoison, bytes);
    std::memset(dyn_ptr, kPoison, dyn);
    run_block(b);
  }
  (void)dyn_ptr;
}

void sync_threads() {
  if (t_block == nullptr) throw std::runtime_error("rsn_fast CUDA emulation: __syncthreads outside a kernel");
  yield_to_scheduler(State::kBarrier);
}

void* dynamic_shared() {
  uintptr_t p = reinterpret_cast<uintptr_t>(t_dynamic.data());
  return reinterpret_cast<void*>(p + (16 - p % 16) % 16);
}

uint64_t shuffle_bits(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width) {
  Block* b = t_block;
  if (b == nullptr) throw std::runtime_error("rsn_fast CUDA emulation: a warp shuffle outside a kernel");
  Fiber& f = b->fibers[b->current];
  f.shfl_mask = mask;
  f.shfl_kind = kind;
  f.shfl_arg = arg;
  f.shfl_width = width <= 0 || width > 32 ? 32 : width;
  f.shfl_in = bits;
  yield_to_scheduler(State::kShuffle);
  return b->fibers[b->current].shfl_out;
}

cudaError_t get_last_error() { return cudaSuccess; }  // a failed launch throws instead

cudaError_t set_kernel_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<size_t>(value) > kOptinSharedPerBlock) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(g_mu);
  g_max_dynamic[kernel] = value;
  return cudaSuccess;
}

cudaError_t kernel_attributes(cudaFuncAttributes* out, const void* kernel) {
  std::memset(out, 0, sizeof(*out));
  const LaunchSite site{"(cudaFuncGetAttributes)", __FILE__, __LINE__};
  out->sharedSizeBytes = shared_vars(site, kernel).bytes;
  out->maxThreadsPerBlock = kMaxThreadsPerBlock;
  std::lock_guard<std::mutex> lock(g_mu);
  const auto it = g_max_dynamic.find(kernel);
  out->maxDynamicSharedSizeBytes =
      it != g_max_dynamic.end() ? it->second : static_cast<int>(kDefaultSharedPerBlock - out->sharedSizeBytes);
  return cudaSuccess;
}

cudaError_t get_device(int* dev) {
  *dev = 0;
  return cudaSuccess;
}

cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = kMultiProcessors; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(kOptinSharedPerBlock); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(kDefaultSharedPerBlock); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 7; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}

const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "CUDA error (emulation)";
  }
}

void register_launch_bound(const char* file, const char* name, int bound) {
  std::lock_guard<std::mutex> lock(g_mu);
  launch_bounds()[{file, name}] = bound;
}

std::vector<LaunchRecord> launches() {
  std::lock_guard<std::mutex> lock(g_mu);
  return {g_launches.begin(), g_launches.end()};
}

void clear_launches() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_launches.clear();
}

}  // namespace rsn_emu

#endif  // RSN_FAST_CUDA_EMULATION
