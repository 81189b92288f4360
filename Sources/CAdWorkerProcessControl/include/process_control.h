#ifndef ADWORKER_PROCESS_CONTROL_H
#define ADWORKER_PROCESS_CONTROL_H

/// Asks the kernel to send SIGTERM to this process when its parent dies (Linux prctl
/// PR_SET_PDEATHSIG; variadic, so Swift cannot call it directly). Returns 0 on success.
int adworker_terminate_with_parent(void);

#endif
