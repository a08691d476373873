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

#endif
