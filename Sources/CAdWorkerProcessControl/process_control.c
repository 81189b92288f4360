#include "process_control.h"

#include <signal.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

int adworker_terminate_with_parent(void) {
#if defined(__linux__)
    return prctl(PR_SET_PDEATHSIG, SIGTERM);
#else
    return -1;
#endif
}
