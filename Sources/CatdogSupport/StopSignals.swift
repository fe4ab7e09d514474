import CSignals
import Foundation

/// SIGTERM, SIGINT and SIGUSR1 as a request to stop training cleanly (preemption, a scheduler's
/// time limit, Ctrl-C): the handler only records the first one; the training loop reads it
/// between steps. A further one at least `grace` seconds later ends the process at once.
public enum StopSignals {
    /// `announce`: the first signal prints a line saying what happens next (one rank says it).
    public static func install(grace: Double = 2, announce: Bool = true) throws {
        guard catdog_stop_signals_install(grace, announce ? 1 : 0) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EINVAL)
        }
    }

    public static func uninstall() { catdog_stop_signals_uninstall() }

    /// The first stop signal this process received, or 0.
    public static var received: Int32 { catdog_stop_signal() }

    /// Waits up to `seconds` for the first stop signal: it, once (to one caller, at once if it
    /// came earlier), or 0. How the stall watchdog hears of one without polling.
    public static func wait(upTo seconds: Double) -> Int32 { catdog_stop_signal_wait(seconds) }

    /// "SIGTERM" for SIGTERM, and so on.
    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGUSR1: "SIGUSR1"
        default: "signal \(signal)"
        }
    }
}
