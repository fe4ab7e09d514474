#include "catdog_signals.h"

#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t first_signal = 0;
// When the first arrived (CLOCK_MONOTONIC, ms). Only the handler touches it, and the handlers
// of the three signals block each other, so it needs no atomicity.
static long first_at_ms = 0;
static long grace_ms = 2000;
static int announce_first = 0;
// Posted once, by the first signal, for catdog_stop_signal_wait (sem_post is async-signal-safe).
static sem_t first_posted;
static int first_posted_ready = 0;

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe (POSIX.1-2008)
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void on_stop(int signal) {
    if (first_signal == 0) {
        first_at_ms = now_ms();
        first_signal = signal;
        if (first_posted_ready) sem_post(&first_posted);
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
    if (!first_posted_ready) {
        if (sem_init(&first_posted, 0, 0) != 0) return -1;
        first_posted_ready = 1;
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
    if (!first_posted_ready) {
        struct timespec pause = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
        while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {}
        return 0;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long nanoseconds = until.tv_nsec + (long)((seconds - (double)(time_t)seconds) * 1e9);
    until.tv_sec += (time_t)seconds + nanoseconds / 1000000000;
    until.tv_nsec = nanoseconds % 1000000000;
    for (;;) {
        if (sem_timedwait(&first_posted, &until) == 0) return first_signal;
        if (errno != EINTR) return 0;
    }
}

void catdog_stop_signals_uninstall(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) sigaction(stop_signals[i], &action, NULL);
}
