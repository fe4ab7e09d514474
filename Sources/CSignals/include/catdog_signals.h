#ifndef CATDOG_SIGNALS_H
#define CATDOG_SIGNALS_H

// Stop signals for training (preemption, a time limit, Ctrl-C): SIGTERM, SIGINT and SIGUSR1
// only set a flag, which the training loop reads between steps, so that every rank finishes
// the step it is in, the ranks agree, one checkpoint is written and the run exits resumable.
// A further stop signal at least `grace_seconds` after the first ends the process at once
// (exit status 128 + the signal): one Ctrl-C reaches a rank twice (from the terminal and
// from mpirun), which must not count as two.
//
// Signal handlers must only do what is async-signal-safe; that is why this is C.

// Installs the handlers; with `announce`, the first signal also prints a line saying what
// happens next. Returns 0, or -1 (errno set) if sigaction failed.
int catdog_stop_signals_install(double grace_seconds, int announce);
// The first stop signal received (SIGTERM, SIGINT or SIGUSR1), or 0 if none yet.
int catdog_stop_signal(void);
// Waits up to `seconds` (0 to 3600) for the first stop signal and returns it, or 0 when none
// came. The first signal is returned by one call only, at once if it came before the call: one
// thread (the stall watchdog) learns of it without polling. Before install, only sleeps.
int catdog_stop_signal_wait(double seconds);
// Restores the default actions (after the run has stopped).
void catdog_stop_signals_uninstall(void);

// This thread's timer slack in nanoseconds (prctl PR_SET_TIMERSLACK: how late the kernel may
// end a sleep, 50 µs by default). Returns 0, or -1 (errno set). prctl is variadic, which Swift
// cannot call.
int catdog_set_timer_slack(unsigned long nanoseconds);

#endif
