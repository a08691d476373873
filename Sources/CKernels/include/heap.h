// The C library's allocator settings for a process that allocates and frees tensors of many
// megabytes over and over (glibc's malloc).
#ifndef AFFINITY_HEAP_H
#define AFFINITY_HEAP_H

/// Freed blocks of up to 64 MiB go back to the heap for the next allocation, and up to 512 MiB of
/// free heap is kept before any is given back to the system (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).
/// By default blocks above a few MiB are mapped and unmapped each time, and each reuse faults
/// every page in again, zeroed.
void affinity_heap_hold_freed(void);

/// Gives the heap's free memory back to the system now (malloc_trim).
void affinity_heap_release_freed(void);

#endif
