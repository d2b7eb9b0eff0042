// The loopback tests' child processes (chatd, chat, chatctl, sh):
// posix_spawn and waitpid, in place of Foundation's Process.
//
// Why not Process: in Swift 6.3.1's Foundation, Process.run() lists
// /proc/self/fd to find the descriptors to close in the child, and copies
// each directory entry whole, 280 bytes, from records that glibc packs
// into a 32 KiB buffer at their real length (24 bytes for "1358"). With
// some 1,300 descriptors open the last record sits at the buffer's end,
// and when that end is also the end of a mapping, the copy faults. The
// abuse test holds 5,000 sockets while the suites beside it start chatd
// and chat, and one CI run died of it: SIGSEGV in memmove, under
// findMaximumOpenFromProcSelfFD; AddressSanitizer reports it as a
// heap-buffer-overflow every time. swift-corelibs-foundation fixed it in
// #5472 (May 2026), after 6.3.1.
//
// So this is the part of Process the tests use, and no more: the child's
// standard streams are duplicated from descriptors the caller owns
// (/dev/null where none is given), every other descriptor is closed in it,
// and it starts with no signal blocked and none ignored, as from a shell.
// The child is reaped here, under a lock, and signalled only under the same
// lock until then, so a signal never reaches a recycled pid. A child still
// running when its object goes is killed and reaped: no test leaves one
// behind.

import Foundation
import Glibc
import Synchronization

final class ChildProcess: Sendable {
    enum Termination: Equatable, Sendable, CustomStringConvertible {
        case exit(Int32)
        case signal(Int32)

        var description: String {
            switch self {
            case .exit(let status): "exit status \(status)"
            case .signal(let number): "signal \(number)"
            }
        }
    }

    let pid: pid_t
    /// The program's file name, for messages.
    let name: String
    /// How the child ended, once it has been reaped.
    private let ended = Mutex<Termination?>(nil)

    /// Starts `executable` with `arguments` and the test process's
    /// environment, `environment` on top. The descriptors become the
    /// child's standard input, output and error; they stay the caller's,
    /// who closes them once the child has its copies.
    init(
        _ executable: URL, _ arguments: [String], environment: [String: String] = [:],
        standardInput: Int32? = nil, standardOutput: Int32? = nil, standardError: Int32? = nil
    ) throws {
        name = executable.lastPathComponent
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { throw TestFailure(description: "open /dev/null: errno \(errno)") }
        defer { close(null) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, source) in [standardInput, standardOutput, standardError].enumerated() {
            try Self.check(posix_spawn_file_actions_adddup2(&actions, source ?? null, Int32(target)), "adddup2")
        }
        try Self.check(Self.addCloseFrom(&actions, 3), "addclosefrom_np")

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        try Self.check(posix_spawnattr_setsigmask(&attributes, &none), "setsigmask")
        try Self.check(posix_spawnattr_setsigdefault(&attributes, &all), "setsigdefault")
        try Self.check(
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)), "setflags")

        let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
        let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable.path, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw TestFailure(description: "cannot start \(executable.path): \(String(cString: strerror(result)))")
        }
        self.pid = pid
    }

    deinit {
        killAndReap()
    }

    /// How the child ended, or nil while it runs.
    var termination: Termination? {
        ended.withLock { ended in
            if ended == nil { ended = Self.reap(pid) }
            return ended
        }
    }

    var isRunning: Bool { termination == nil }

    /// The exit status, or the signal's number for a child a signal ended,
    /// as Foundation's terminationStatus; only once the child has ended.
    var terminationStatus: Int32 {
        switch termination {
        case .exit(let status)?, .signal(let status)?: status
        case nil: preconditionFailure("\(name) (pid \(pid)) is still running")
        }
    }

    /// Waits until the child ends, at most `timeout` (nil: as long as it
    /// takes), and returns how it ended; nil if it still runs.
    @discardableResult
    func waitUntilExit(timeout: Duration? = nil) -> Termination? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let termination { return termination }
            if let deadline, ContinuousClock.now >= deadline { return nil }
            Thread.sleep(forTimeInterval: 0.002)
        }
    }

    /// Sends the signal `number`, unless the child has been reaped.
    func signal(_ number: Int32) {
        ended.withLock { ended in
            if ended == nil { _ = kill(pid, number) }
        }
    }

    /// SIGKILL, then waits for the end.
    func killAndReap() {
        signal(SIGKILL)
        waitUntilExit()
    }

    /// waitpid without blocking: how the child ended, or nil while it runs.
    private static func reap(_ pid: pid_t) -> Termination? {
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == 0 { return nil }
            if result == pid {
                // WIFEXITED, WEXITSTATUS and WTERMSIG are C macros, which Swift does not import.
                let signal = status & 0x7f
                return signal == 0 ? .exit((status >> 8) & 0xff) : .signal(signal)
            }
            if errno == EINTR { continue }
            // ECHILD: only this type reaps its children, so this cannot
            // happen; saying the child ended at least ends every wait.
            return .exit(-1)
        }
    }

    private static func check(_ result: Int32, _ call: String) throws {
        guard result == 0 else {
            throw TestFailure(description: "posix_spawn \(call): \(String(cString: strerror(result)))")
        }
    }

    /// posix_spawn_file_actions_addclosefrom_np (glibc 2.34): its header
    /// declares it only under _GNU_SOURCE, which the Glibc module is not
    /// built with.
    private static func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ lowest: Int32) -> Int32 {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return ENOSYS }  // nil: RTLD_DEFAULT
        return unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, lowest)
    }
}
