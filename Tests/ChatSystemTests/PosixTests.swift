// Tests for the syscall layer's error values and its read/write wrappers.
//
// These pin the error text operators see in logs and the would-block
// contract every nonblocking caller relies on.

import ChatSystem
import Glibc
import Testing

// MARK: - SystemError

@Suite struct SystemErrorTests {
    @Test(arguments: [
        (EADDRINUSE, "bind", "bind: Address already in use (errno 98)"),
        (ENOENT, "open(/etc/chatd.toml)", "open(/etc/chatd.toml): No such file or directory (errno 2)"),
        (ECONNREFUSED, "sendto", "sendto: Connection refused (errno 111)"),
    ])
    func description(errno: Int32, call: String, expected: String) {
        #expect(SystemError(errno: errno, call: call).description == expected)
    }

    @Test func equality() {
        #expect(SystemError(errno: EPERM, call: "sendto") == SystemError(errno: EPERM, call: "sendto"))
        #expect(SystemError(errno: EPERM, call: "sendto") != SystemError(errno: EACCES, call: "sendto"))
    }
}

// MARK: - Pipes, reads and writes

@Suite struct PosixIOTests {
    @Test func readOnEmptyNonblockingPipeWouldBlock() throws {
        let (readEnd, writeEnd) = try Posix.pipe(nonblocking: true)
        defer {
            try? Posix.close(fd: readEnd)
            try? Posix.close(fd: writeEnd)
        }
        var buffer = [UInt8](repeating: 0, count: 16)
        let result = try buffer.withUnsafeMutableBytes { try Posix.read(fd: readEnd, into: $0) }
        #expect(result.value == nil)
        #expect(try Posix.poll(fd: readEnd, events: Int16(POLLIN), timeoutMilliseconds: 0) == 0)
    }

    @Test func writeAllThenReadBack() throws {
        let (readEnd, writeEnd) = try Posix.pipe()
        defer { try? Posix.close(fd: readEnd) }
        let message = Array("hello, pipe".utf8)
        try Posix.writeAll(fd: writeEnd, bytes: message)
        try Posix.close(fd: writeEnd)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4)
        while true {
            let result = try buffer.withUnsafeMutableBytes { try Posix.read(fd: readEnd, into: $0) }
            let count = try #require(result.value)
            if count == 0 { break }
            received += buffer[..<count]
        }
        #expect(received == message)
    }

    @Test func failingCallThrowsSystemErrorNamingIt() throws {
        let error = try #require(throws: SystemError.self) {
            try Posix.open(path: "/nonexistent-chatd-test/file", flags: O_RDONLY)
        }
        #expect(error == SystemError(errno: ENOENT, call: "open(/nonexistent-chatd-test/file)"))
    }
}
