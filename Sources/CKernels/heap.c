// See include/heap.h.
#include "heap.h"

#include <malloc.h>

void affinity_heap_hold_freed(void) {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

void affinity_heap_release_freed(void) {
    malloc_trim(0);
}
