#include "counters.h"

static _Thread_local int64_t macs;

void affinity_macs_add(int64_t n) { macs += n; }
int64_t affinity_macs_get(void) { return macs; }
void affinity_macs_set(int64_t n) { macs = n; }

static _Thread_local int in_parallel;

int affinity_in_parallel(void) { return in_parallel; }
int affinity_set_in_parallel(int on) { int was = in_parallel; in_parallel = on; return was; }
