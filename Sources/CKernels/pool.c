// See include/pool.h.
//
// One loop at a time: a caller takes `busy`, publishes the task, then a new generation in `claim`
// (generation in the high 32 bits, the next chunk to hand out in the low 32) and in `futex_word`
// (which sleeping workers wait on), wakes sleepers if there are any, and takes chunks like a worker.
// A chunk is claimed by a compare-and-swap of `claim` that only succeeds while the generation is the
// one the claimer saw and chunks are left, so a worker late for a finished loop claims nothing (and a
// successful claim means the loop is unfinished, so the task it reads is that loop's). The caller
// waits for `done` to reach the count, which also makes every chunk's writes visible to it.
#define _GNU_SOURCE
#include "pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 255
#define SPIN_NS 2000000  // how long an idle worker spins before it sleeps

static atomic_int busy;
static _Atomic uint64_t claim;
static atomic_uint futex_word;
static atomic_int sleepers;
static atomic_long done;
static _Atomic(affinity_pool_task) task_fn;
static _Atomic(void *) task_context;
static atomic_long task_chunks;
static atomic_int task_workers;  // how many workers the loop asks for: workers 0 ..< task_workers help
static uint32_t generation;  // the last one published (written by the caller holding busy)
static atomic_int workers;
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

// Claims and runs chunks of generation g until none are left.
static void work(uint32_t g) {
    for (;;) {
        uint64_t v = atomic_load_explicit(&claim, memory_order_acquire);
        if ((uint32_t)(v >> 32) != g) return;
        long chunks = atomic_load_explicit(&task_chunks, memory_order_relaxed);
        if ((long)(uint32_t)v >= chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&claim, &v, v + 1, memory_order_acq_rel, memory_order_relaxed)) continue;
        // The claim succeeded: generation g is unfinished, and the task is its own.
        affinity_pool_task fn = atomic_load_explicit(&task_fn, memory_order_relaxed);
        void *context = atomic_load_explicit(&task_context, memory_order_relaxed);
        fn(context, (long)(uint32_t)v);
        atomic_fetch_add_explicit(&done, 1, memory_order_release);
    }
}

// Worker `index` (0, 1, …) helps the loops that ask for more than `index` workers; it spins for
// SPIN_NS after a loop it helped, and sleeps at once after one it does not (a process that once ran
// loops on more threads than it does now keeps those workers asleep).
static void *worker_main(void *arg) {
    const int index = (int)(intptr_t)arg;
    pthread_setname_np(pthread_self(), "affinity-worker");  // what top -H and gdb show
    uint32_t seen = 0;  // no loop: a worker started while its first loop is being handed out joins it
    int spin = 1;
    for (;;) {
        uint32_t g;
        long start = now_ns();
        int spins = 0;
        while ((g = atomic_load_explicit(&futex_word, memory_order_acquire)) == seen) {
            _mm_pause();
            if (spin && ++spins % 256 == 0) sched_yield();  // a thread waiting for this processor gets it
            if (!spin || (spins % 256 == 0 && now_ns() - start > SPIN_NS)) {
                atomic_fetch_add(&sleepers, 1);
                syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
                atomic_fetch_sub(&sleepers, 1);
                start = now_ns();
                spin = 1;
            }
        }
        seen = g;
        spin = index < atomic_load_explicit(&task_workers, memory_order_relaxed);
        if (spin) work(g);
    }
    return NULL;
}

static atomic_int start_failed;  // once a worker could not be started, no more tries

// Starts workers until there are `want` (under start_lock); 0 if one could not be started.
static int ensure_workers(int want) {
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    if (atomic_load_explicit(&workers, memory_order_acquire) >= want) return 1;
    if (atomic_load(&start_failed)) return 0;
    pthread_mutex_lock(&start_lock);
    int ok = 1;
    while (atomic_load(&workers) < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 8 << 20);  // as a main thread's: the chunks run Swift code
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)atomic_load(&workers));
        pthread_attr_destroy(&attr);
        if (rc != 0) { ok = 0; atomic_store(&start_failed, 1); break; }
        atomic_fetch_add(&workers, 1);
    }
    pthread_mutex_unlock(&start_lock);
    return ok;
}

// A forked child has none of the parent's threads: it starts its own workers if it needs them.
static void after_fork_in_child(void) {
    atomic_store(&workers, 0);
    atomic_store(&start_failed, 0);
    atomic_store(&sleepers, 0);
    atomic_store(&busy, 0);
    pthread_mutex_init(&start_lock, NULL);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void register_fork_handler(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

int affinity_pool_run(long chunks, int threads, affinity_pool_task task, void *context) {
    if (chunks <= 0) return 1;
    if (chunks > UINT32_MAX / 2 || threads < 2) return 0;
    pthread_once(&fork_once, register_fork_handler);
    int expected = 0;
    if (!atomic_compare_exchange_strong(&busy, &expected, 1)) return 0;
    // Fewer workers than asked for (a thread could not be started: a limit on tasks) still help;
    // none at all, and the caller's loop goes elsewhere.
    int helpers = threads - 1;
    if (!ensure_workers(helpers)) {
        helpers = atomic_load(&workers);
        if (helpers == 0) {
            atomic_store_explicit(&busy, 0, memory_order_release);
            return 0;
        }
    }
    atomic_store_explicit(&task_fn, task, memory_order_relaxed);
    atomic_store_explicit(&task_context, context, memory_order_relaxed);
    atomic_store_explicit(&task_chunks, chunks, memory_order_relaxed);
    atomic_store_explicit(&task_workers, helpers, memory_order_relaxed);
    atomic_store_explicit(&done, 0, memory_order_relaxed);
    uint32_t g = ++generation;
    if (g == 0) g = ++generation;  // 0 never names a loop
    atomic_store_explicit(&claim, (uint64_t)g << 32, memory_order_release);
    atomic_store(&futex_word, g);  // sequentially consistent, before sleepers is read
    if (atomic_load(&sleepers) > 0) syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, MAX_WORKERS, NULL, NULL, 0);
    work(g);
    for (int spins = 1; atomic_load_explicit(&done, memory_order_acquire) < chunks; spins++) {
        _mm_pause();
        if (spins % 1024 == 0) sched_yield();  // a worker descheduled mid-chunk gets the processor
    }
    atomic_store_explicit(&busy, 0, memory_order_release);
    return 1;
}

int affinity_pool_workers(void) { return atomic_load(&workers); }
