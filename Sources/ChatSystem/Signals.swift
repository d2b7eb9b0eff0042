// The signal numbers chatd and chat handle, so callers need not import Glibc.

import Glibc

public enum Signal {
    public static let hangup = SIGHUP
    public static let interrupt = SIGINT
    public static let terminate = SIGTERM
    /// Sent on a write to a pipe nobody reads any more.
    public static let brokenPipe = SIGPIPE

    /// Ignores `signal` for the whole process from now on (and in any
    /// program it runs: an ignored signal stays ignored across exec). For
    /// SIGPIPE this turns a write to a closed pipe into the error EPIPE,
    /// which the writer can act on, instead of an exit with no cleanup.
    public static func ignore(_ signal: Int32) throws {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = SIG_IGN
        sigemptyset(&action.sa_mask)
        _ = try syscall("sigaction(\(name(signal)))") { sigaction(signal, &action, nil) }
    }

    /// "SIGTERM" and the like, for logs.
    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGHUP: "SIGHUP"
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        case SIGPIPE: "SIGPIPE"
        case SIGUSR1: "SIGUSR1"
        case SIGUSR2: "SIGUSR2"
        default: "signal \(signal)"
        }
    }
}
