// Runs the built `chatd` and `chat` binaries for the loopback tests.
//
// Each test gets its own temporary folder (config, snapshot, chatd's stderr
// log) and its own free port, and talks to chatd only over loopback, from
// source addresses of 127.0.0.0/8 (or ::1). Every wait is bounded; a daemon
// still running when its test ends is killed.

import ChatCore
import ChatSystem
import Foundation
import Testing

/// The build folder holding this test executable.
let testExecutableFolder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()

enum Binaries {
    /// The folder holding chatd and chat: CHATD_BIN_DIR, or the folder of
    /// this test executable (SwiftPM puts both in the same build folder).
    static let directory: URL = {
        if let override = ProcessInfo.processInfo.environment["CHATD_BIN_DIR"] {
            return URL(fileURLWithPath: override)
        }
        return testExecutableFolder
    }()

    static var chatd: URL { directory.appendingPathComponent("chatd") }
    static var chat: URL { directory.appendingPathComponent("chat") }
    static var chatctl: URL { directory.appendingPathComponent("chatctl") }
}

/// Whether the fault tests too heavy for `make test` run: `make
/// chat-fault-test` sets CHATD_FAULT_TESTS.
let heavyFaultTests = ProcessInfo.processInfo.environment["CHATD_FAULT_TESTS"] != nil

/// Whether the binaries run under a sanitizer (`make test-sanitize` sets
/// CHATD_SANITIZER): several times slower, and ASan keeps freed memory in
/// quarantine, so tests that load large registries use smaller ones then,
/// and resident-set figures mean nothing.
let underSanitizer = ProcessInfo.processInfo.environment["CHATD_SANITIZER"] != nil

struct TestFailure: Error, CustomStringConvertible {
    let description: String
}

/// A port that was free a moment ago on 127.0.0.1 and ::1.
func freePort() throws -> UInt16 {
    let probe = try UDPSocket(binding: Endpoint(.anyIPv6, port: 0))
    defer { try? probe.close() }
    return try probe.localEndpoint.port
}

/// Raises the test process's soft limit on open descriptors to 8,192, enough
/// for the abuse test's 5,000 sockets (never lowers it); fails if the hard
/// limit is lower. One figure for every caller, so that two tests raising
/// it at once cannot leave it at the lower of their wishes.
func raiseOpenFileLimit() throws {
    let wanted: rlim_t = 8192
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw TestFailure(description: "getrlimit") }
    guard limit.rlim_cur < wanted else { return }
    guard limit.rlim_max >= wanted else {
        throw TestFailure(description: "the test needs \(wanted) descriptors; the hard limit is \(limit.rlim_max)")
    }
    limit.rlim_cur = wanted
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { throw TestFailure(description: "setrlimit") }
}

/// A fresh temporary folder, removed by the caller.
func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("chatd-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

struct ProcessResult {
    let status: Int32
    let stdout: String
    let stderr: String
    var lastLine: String? { stdout.split(separator: "\n").last.map(String.init) }
}

/// Runs a program to completion (at most `timeout`), capturing its output.
func runProgram(_ url: URL, _ arguments: [String], timeout: Duration = .seconds(30)) throws -> ProcessResult {
    let running = try startProgram(url, arguments)
    return try running.wait(timeout: timeout)
}

final class RunningProgram {
    let process: ChildProcess
    private let stdout: Pipe
    private let stderr: Pipe

    init(_ url: URL, _ arguments: [String], environment: [String: String] = [:]) throws {
        let stdout = Pipe()
        let stderr = Pipe()
        process = try ChildProcess(
            url, arguments, environment: environment, standardOutput: stdout.fileHandleForWriting.fileDescriptor,
            standardError: stderr.fileHandleForWriting.fileDescriptor)
        // The child has its copies; with ours open, reading would never see the end.
        try stdout.fileHandleForWriting.close()
        try stderr.fileHandleForWriting.close()
        self.stdout = stdout
        self.stderr = stderr
    }

    func wait(timeout: Duration) throws -> ProcessResult {
        guard process.waitUntilExit(timeout: timeout) != nil else {
            process.signal(SIGTERM)
            process.waitUntilExit()
            throw TestFailure(description: "\(process.name) did not finish within \(timeout)")
        }
        return ProcessResult(
            status: process.terminationStatus,
            stdout: String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
            stderr: String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }
}

func startProgram(_ url: URL, _ arguments: [String]) throws -> RunningProgram {
    try RunningProgram(url, arguments)
}

/// An empty config file, so tests never read the machine's /etc/chatd/chatd.toml
/// (and leave no file behind).
let emptyConfig = "/dev/null"

/// Runs the `chat` binary against a server on loopback, with short timeouts.
func chat(_ arguments: [String], port: UInt16, server: String = "127.0.0.1", timeoutMs: Int = 200, attempts: Int = 4) throws -> ProcessResult {
    try runProgram(
        Binaries.chat,
        arguments + [
            "--config", emptyConfig, "--server", server, "--port", "\(port)",
            "--timeout-ms", "\(timeoutMs)", "--attempts", "\(attempts)",
        ])
}

/// One chatd process with its own folder, config and port.
final class Daemon {
    let folder: URL
    let port: UInt16
    var configPath: String { folder.appendingPathComponent("chatd.toml").path }
    var snapshotPath: String { folder.appendingPathComponent("state/registry.json").path }
    var logPath: String { folder.appendingPathComponent("chatd.log").path }
    var controlPath: String { folder.appendingPathComponent("control").path }
    private(set) var process: ChildProcess?

    init(bind: String = "127.0.0.1", extraConfig: String = "", logLevel: String = "info") throws {
        folder = try temporaryFolder()
        port = try freePort()
        try writeConfig(bind: bind, extra: extraConfig, logLevel: logLevel)
    }

    deinit {
        process?.killAndReap()
        try? FileManager.default.removeItem(at: folder)
    }

    func writeConfig(bind: String = "127.0.0.1", port: UInt16? = nil, extra: String = "", logLevel: String = "info") throws {
        let text = """
            [server]
            bind = "\(bind)"
            port = \(port ?? self.port)

            [registry]
            snapshot_path = "\(snapshotPath)"
            \(extra)

            [control]
            socket = "\(controlPath)"

            [log]
            level = "\(logLevel)"

            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts chatd (or `executable` with `arguments`, which runs chatd) and
    /// waits until it answers.
    func start(
        executable: URL = Binaries.chatd, arguments: [String]? = nil, environment: [String: String] = [:],
        timeout: Duration = .seconds(10)
    ) throws {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try log.seekToEnd()
        let process = try ChildProcess(
            executable, arguments ?? ["--config", configPath], environment: environment,
            standardOutput: log.fileDescriptor, standardError: log.fileDescriptor)
        try log.close()
        self.process = process
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw TestFailure(description: "chatd exited with \(process.terminationStatus): \(self.log)")
            }
            if (try? request("CHAT/1 0 CONNECT", from: "127.0.0.1", timeout: .milliseconds(100))) ?? nil != nil { return }
        }
        throw TestFailure(description: "chatd did not answer within \(timeout): \(self.log)")
    }

    /// Sends a signal and waits (at most 10 s) for chatd to end; returns its
    /// exit status, or the signal's number if a signal ended it.
    @discardableResult
    func stop(signal: Int32 = SIGTERM) throws -> Int32 {
        guard let process else { throw TestFailure(description: "chatd is not running") }
        process.signal(signal)
        guard process.waitUntilExit(timeout: .seconds(10)) != nil else {
            throw TestFailure(description: "chatd did not stop within 10 s")
        }
        self.process = nil
        return process.terminationStatus
    }

    func signal(_ signal: Int32) { process?.signal(signal) }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits until the log contains `text`.
    func waitForLog(_ text: String, timeout: Duration = .seconds(10)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if log.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return false
    }

    /// Sends one datagram from `source` and returns the reply's text (nil if none came).
    func request(_ text: String, from source: String, sourcePort: UInt16 = 0, timeout: Duration = .seconds(2)) throws -> String? {
        try exchange(Array(text.utf8), from: source, sourcePort: sourcePort, timeout: timeout)
            .map { String(decoding: $0, as: UTF8.self) }
    }

    func exchange(_ bytes: [UInt8], from source: String, sourcePort: UInt16 = 0, timeout: Duration = .seconds(2)) throws -> [UInt8]? {
        let address = IPAddress(source)!
        let socket = try UDPSocket(binding: Endpoint(address, port: sourcePort))
        defer { try? socket.close() }
        let server = Endpoint(address.isIPv4 ? .loopbackIPv4 : .loopbackIPv6, port: port)
        _ = try socket.send(bytes, to: server)
        let milliseconds = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        guard try socket.waitReadable(timeoutMilliseconds: milliseconds),
            case .processed(let (reply, _)) = try socket.receive()
        else { return nil }
        return reply
    }
}

extension Duration {
    /// Whole milliseconds, rounded up (a wait that ends early only loops).
    var roundedUpMilliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}
