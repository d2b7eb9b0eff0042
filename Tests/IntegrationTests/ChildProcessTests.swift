// The harness's child processes (ChildProcess.swift): started beside
// thousands of open descriptors, which Foundation's Process could not do
// safely, with none of them inherited, and with no signal blocked or
// ignored whatever the starting thread blocks.

import Foundation
import Glibc
import Testing

@Suite struct ChildProcessTests {
    @Test func aChildStartsBesideThousandsOfDescriptorsAndInheritsNone() throws {
        try raiseOpenFileLimit()
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try #require(null >= 0)
        // dup gives descriptors without close-on-exec: only closing them in
        // the child keeps them from it. 2,000 fill more than glibc's 32 KiB
        // readdir buffer of /proc/self/fd, where Process.run() overran it.
        let held = (0..<2_000).map { _ in dup(null) }
        defer {
            for fd in held where fd >= 0 { close(fd) }
            close(null)
        }
        #expect(held.allSatisfy { $0 >= 0 })
        let listing = try runProgram(URL(fileURLWithPath: "/bin/ls"), ["-1", "/proc/self/fd"])
        #expect(listing.status == 0, "\(listing.stderr)")
        // 0, 1 and 2, and the one ls opened to read the directory.
        #expect(listing.stdout.split(separator: "\n") == ["0", "1", "2", "3"])
    }

    @Test func aChildStartsWithNoSignalBlockedOrIgnored() throws {
        // Blocked on this thread only, so nothing else in the test process changes.
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        sigaddset(&blocked, SIGINT)
        var previous = sigset_t()
        try #require(pthread_sigmask(SIG_BLOCK, &blocked, &previous) == 0)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let status = try runProgram(URL(fileURLWithPath: "/bin/grep"), ["-E", "^Sig(Blk|Ign):", "/proc/self/status"])
        let masks = Dictionary(
            uniqueKeysWithValues: status.stdout.split(separator: "\n").compactMap { line -> (String, UInt64)? in
                let parts = line.split(separator: "\t")
                guard parts.count == 2, let mask = UInt64(parts[1], radix: 16) else { return nil }
                return (String(parts[0]), mask)
            })
        #expect(masks["SigBlk:"] == 0)
        // Signals 1 to 31. glibc's posix_spawn leaves its own two (32 and
        // 33, for cancellation and setxid) ignored; the child's glibc
        // installs its handlers for them as it starts.
        #expect(masks["SigIgn:"].map { $0 & 0x7fff_ffff } == 0)
    }

    @Test func aChildsEndIsItsExitStatusOrTheSignalThatEndedIt() throws {
        let exited = try ChildProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", "exit 7"])
        #expect(exited.waitUntilExit(timeout: .seconds(10)) == .exit(7))
        #expect(exited.terminationStatus == 7)
        let killed = try ChildProcess(URL(fileURLWithPath: "/bin/sleep"), ["30"])
        #expect(killed.isRunning)
        #expect(killed.waitUntilExit(timeout: .milliseconds(50)) == nil)
        killed.signal(SIGTERM)
        #expect(killed.waitUntilExit(timeout: .seconds(10)) == .signal(SIGTERM))
        #expect(!killed.isRunning)
    }
}
