#include "catdog_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t first_signal = 0;
// When the first arrived (CLOCK_MONOTONIC, ms). Only the handler touches it, and the handlers
// of the three signals block each other, so it needs no atomicity.
static long first_at_ms = 0;
static long grace_ms = 2000;
static int announce_first = 0;
// A byte written once, by the first signal, for catdog_stop_signal_wait (the self-pipe: write is
// async-signal-safe, and poll's timeout is relative, so a step of the wall clock cannot stretch
// a wait as it would sem_timedwait's absolute CLOCK_REALTIME deadline).
static int first_pipe[2] = {-1, -1};

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe (POSIX.1-2008)
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void on_stop(int signal) {
    if (first_signal == 0) {
        first_at_ms = now_ms();
        first_signal = signal;
        if (first_pipe[1] >= 0) {
            ssize_t ignored = write(first_pipe[1], "s", 1);
            (void)ignored;
        }
        if (announce_first) {
            static const char message[] = "catdog-dist: stop signal received: finishing this step and writing a checkpoint "
                                          "(a second signal, 2 s or more from now, stops at once)\n";
            ssize_t ignored = write(STDERR_FILENO, message, sizeof message - 1);
            (void)ignored;
        }
        return;
    }
    if (now_ms() - first_at_ms >= grace_ms) {
        static const char message[] = "catdog-dist: a second stop signal: stopping at once, without a checkpoint\n";
        ssize_t ignored = write(STDERR_FILENO, message, sizeof message - 1);
        (void)ignored;
        _exit(128 + signal);
    }
}

static const int stop_signals[] = {SIGTERM, SIGINT, SIGUSR1};

int catdog_stop_signals_install(double grace_seconds, int announce) {
    grace_ms = (long)(grace_seconds * 1000);
    announce_first = announce;
    if (first_pipe[0] < 0) {
        int fds[2];
        if (pipe(fds) != 0) return -1;
        for (int i = 0; i < 2; i++) {
            fcntl(fds[i], F_SETFD, FD_CLOEXEC);
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        }
        first_pipe[0] = fds[0];
        first_pipe[1] = fds[1];
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) sigaddset(&action.sa_mask, stop_signals[i]);
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) {
        if (sigaction(stop_signals[i], &action, NULL) != 0) return -1;
    }
    return 0;
}

int catdog_stop_signal(void) { return first_signal; }

int catdog_stop_signal_wait(double seconds) {
    if (!(seconds > 0)) seconds = 0;
    if (seconds > 3600) seconds = 3600;
    const long until = now_ms() + (long)(seconds * 1000);
    for (;;) {
        long left = until - now_ms();
        if (left < 0) left = 0;
        if (first_pipe[0] < 0) {
            struct timespec pause = {left / 1000, (left % 1000) * 1000000};
            if (nanosleep(&pause, NULL) == 0 || left == 0) return 0;
            continue;  // interrupted: sleep what is left
        }
        struct pollfd ready = {first_pipe[0], POLLIN, 0};
        int n = poll(&ready, 1, (int)left);
        if (n > 0) {
            char byte;
            if (read(first_pipe[0], &byte, 1) == 1) return first_signal;
        }
        if (n == 0 || (n < 0 && errno != EINTR) || left == 0) return 0;
    }
}

void catdog_stop_signals_uninstall(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) sigaction(stop_signals[i], &action, NULL);
}

int catdog_set_timer_slack(unsigned long nanoseconds) { return prctl(PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0); }
