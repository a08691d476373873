// The engine's worker threads: a few threads kept for the process's life that wait for parallel
// loops by spinning for a short while before they sleep, so that a loop started shortly after the
// last one (an inference starts ~400 of them, most a fraction of a millisecond apart) finds its
// workers awake. Waking a sleeping thread costs 50–100 µs on a virtual machine's idle processor
// (measured: Dispatch's concurrentPerform of two 50 µs halves took ~110 µs); a spinning worker
// starts within a microsecond. The spinning ends ~2 ms after the last loop; a process that runs no
// loops has its workers asleep on a futex.
#ifndef AFFINITY_POOL_H
#define AFFINITY_POOL_H

/// The work of one chunk: fn(context, chunk).
typedef void (*affinity_pool_task)(void *context, long chunk);

/// Runs task(context, c) for every c in 0 ..< chunks on the calling thread and the pool's workers
/// (up to threads − 1 of them, started the first time they are needed and kept) and returns when
/// all have returned: 1. Returns 0 at once, having run nothing, when another thread's loop has the
/// workers (the caller runs its loop some other way) or no worker could be started (with some
/// started, those help).
/// Chunks are handed out one at a time, first come first served.
int affinity_pool_run(long chunks, int threads, affinity_pool_task task, void *context);

/// The workers started so far (for tests).
int affinity_pool_workers(void);

#endif
