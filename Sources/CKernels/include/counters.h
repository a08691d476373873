// Per-thread counters of the engine's work (issue 18's roofline): the multiply-adds of the products
// a thread started. Thread-local, so that concurrent analyses in one process count apart; the
// parallel loops hand their workers' counts back to the thread that started them.
#ifndef AFFINITY_COUNTERS_H
#define AFFINITY_COUNTERS_H

#include <stdint.h>

/// Adds n to this thread's multiply-add count.
void affinity_macs_add(int64_t n);
/// This thread's multiply-add count.
int64_t affinity_macs_get(void);
/// Sets this thread's multiply-add count (a parallel loop's worker puts back what it found).
void affinity_macs_set(int64_t n);

/// Whether this thread is running a parallel loop's chunk: a parallel loop started there runs
/// inline (the outer loop already has every thread busy).
int affinity_in_parallel(void);
/// Marks (1) or unmarks (0) this thread as running a parallel loop's chunk; returns the previous mark.
int affinity_set_in_parallel(int on);

#endif
