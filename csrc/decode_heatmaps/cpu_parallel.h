// Parallel loop over independent work items for the CPU kernels of decode_heatmaps and the target ops.
//
// at::parallel_for's OpenMP backend is a header template whose `#pragma omp parallel` only takes effect when the
// extension itself is compiled with -fopenmp; setup.py does not pass it, and linking a second OpenMP runtime next
// to torch's bundled one is risky. So without _OPENMP we split the range over at::get_num_threads() std::threads.
// The work items here are whole heatmaps (microseconds each), so thread start-up (~20 us) is negligible.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace rsn_fast {

// Calls fn(begin, end) over [0, total) in chunks of at least `grain` items, possibly from several threads.
template <typename F>
void parallel_items(int64_t total, int64_t grain, const F& fn) {
  if (total <= 0) return;
#ifdef _OPENMP
  at::parallel_for(0, total, grain, fn);
#else
  grain = std::max<int64_t>(grain, 1);
  const int64_t want = (total + grain - 1) / grain;
  const int64_t nthreads = std::min<int64_t>(std::max<int64_t>(at::get_num_threads(), 1), want);
  if (nthreads <= 1 || at::in_parallel_region()) {
    fn(int64_t{0}, total);
    return;
  }
  const int64_t chunk = (total + nthreads - 1) / nthreads;
  std::vector<std::thread> workers;
  workers.reserve(nthreads - 1);
  for (int64_t t = 1; t < nthreads; ++t) {
    const int64_t b = t * chunk, e = std::min(total, b + chunk);
    if (b < e) workers.emplace_back([&fn, b, e] { fn(b, e); });
  }
  fn(int64_t{0}, std::min(total, chunk));
  for (auto& w : workers) w.join();
#endif
}

}  // namespace rsn_fast
