// chatctl's side of the control protocol (docs/CONTROL.md): find the
// socket, send one request, read its answer, and turn failures into the
// exit statuses Chatctl's help lists.

import ArgumentParser
import ChatConfig
import ChatCore
import ChatSystem
import Glibc

/// Exit statuses, from sysexits(3).
enum Status: Int32 {
    case success = 0
    case usage = 64
    case notRegistered = 65  // EX_DATAERR
    case notRunning = 69  // EX_UNAVAILABLE
    case ioError = 74  // EX_IOERR: the snapshot could not be written
    case tryLater = 75  // EX_TEMPFAIL
    case protocolError = 76  // EX_PROTOCOL
    case permissionDenied = 77  // EX_NOPERM
    case configError = 78  // EX_CONFIG
}

func finish(_ status: Status, _ message: String) -> Never {
    FileSystem.writeStandardError("chatctl: \(message)\n")
    Posix.exit(status.rawValue)
}

extension ConnectionOptions {
    /// --socket, else control.socket of the config file, else the default.
    var path: String {
        if let socket { return socket }
        let config: Config
        do {
            config = try Config.load(path: self.config, read: FileSystem.readFile(atPath:))
        } catch {
            finish(.configError, "\(error)")
        }
        guard !config.control.socket.isEmpty else {
            finish(.notRunning, "the control socket is turned off ([control] socket = \"\" in \(self.config ?? Config.defaultPath))")
        }
        return config.control.socket
    }

    /// Sends `request` and returns the first line of the answer, or exits
    /// with the status its error calls for. `wait` bounds how long chatd may
    /// take to answer (a snapshot of millions of users takes seconds).
    func send(_ request: ControlRequest, wait: Duration = .seconds(30)) -> ControlConnection {
        let path = self.path
        let connection: ControlConnection
        do {
            connection = try ControlConnection(path: path, wait: wait)
        } catch let error as SystemError {
            switch error.errno {
            case ENOENT:
                finish(.notRunning, "chatd is not running: no control socket at \(path)")
            case ECONNREFUSED:
                finish(.notRunning, "chatd is not running: nothing accepts on \(path)")
            case EACCES, EPERM:
                finish(.permissionDenied, "permission denied: \(path) (chatctl must run as root, or as chatd's user)")
            default:
                finish(.notRunning, "cannot connect to chatd at \(path): \(error)")
            }
        } catch {
            finish(.notRunning, "cannot connect to chatd at \(path): \(error)")
        }
        connection.write(request.object.line)
        return connection
    }
}

/// One connection to chatd's control socket, read line by line.
final class ControlConnection {
    let stream: UnixStream
    let path: String
    /// Bytes read and not yet returned start at `start`: a listing of a
    /// million lines must not shift the buffer once per line.
    private var buffer: [UInt8] = []
    private var start = 0

    init(path: String, wait: Duration) throws {
        stream = try UnixStream(connectingTo: path)
        self.path = path
        try stream.setReceiveTimeout(wait)
    }

    deinit { stream.close() }

    /// Writes the request. A failure is not reported here: chatd may have
    /// answered and closed already (refusing this client, say), and that
    /// answer, waiting to be read, says more than EPIPE.
    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            guard case .processed(let count)? = try? bytes[offset...].withUnsafeBytes({ try stream.write($0) }) else {
                return
            }
            offset += count
        }
    }

    /// The next answer line as an object; exits on a closed connection, a
    /// timeout or a line that is not one.
    func next() -> ControlObject {
        while true {
            if let newline = buffer[start...].firstIndex(of: 0x0a) {
                let line = buffer[start..<newline]
                start = newline + 1
                guard let object = ControlObject(parsing: line) else {
                    finish(.protocolError, "chatd answered something that is not a JSON object: \(String(decoding: line.prefix(200), as: UTF8.self))")
                }
                return object
            }
            buffer.removeSubrange(..<start)
            start = 0
            let result: IOResult<Int>
            do {
                result = try readMore()
            } catch let error as SystemError where error.errno == ECONNRESET {
                finish(.notRunning, "chatd closed the control connection without answering")
            } catch {
                finish(.notRunning, "lost the connection to chatd: \(error)")
            }
            switch result {
            case .processed(0): finish(.notRunning, "chatd closed the control connection without answering (stopping?)")
            case .processed: break
            case .wouldBlock: finish(.tryLater, "chatd did not answer in time at \(path)")
            }
        }
    }

    /// Appends up to 64 KiB from the socket to `buffer`.
    private func readMore() throws -> IOResult<Int> {
        let old = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: 64 << 10))
        let result = try buffer[old...].withUnsafeMutableBytes { try stream.read(into: $0) }
        buffer.removeSubrange((old + (result.value ?? 0))...)
        return result
    }

    /// The next answer, which must say ok; an error answer exits with its status.
    func expectOK() -> ControlObject {
        let object = next()
        guard object["ok"]?.bool == true else { fail(object) }
        return object
    }
}

/// Exits with the status and message of an error answer.
func fail(_ answer: ControlObject) -> Never {
    let message = answer["message"]?.string ?? "chatd refused the request"
    switch answer["error"]?.string.flatMap(ControlError.Code.init(rawValue:)) {
    case .notRegistered?: finish(.notRegistered, message)
    case .permissionDenied?: finish(.permissionDenied, message)
    case .unavailable?, .busy?: finish(.tryLater, message)
    case .snapshotFailed?: finish(.ioError, "snapshot failed: \(message)")
    case .reloadRefused?: finish(.configError, "reload refused, the running config stays: \(message)")
    case .stopping?: finish(.notRunning, message)
    case .badRequest?, .unknownCommand?, .lineTooLong?, .timeout?, nil:
        finish(.protocolError, "chatd did not understand the request (is it another version?): \(message)")
    }
}

extension TargetOptions {
    /// The registration the argument names: an address when it reads as
    /// one (unless --name), a username otherwise (unless --address).
    var resolved: ControlTarget {
        if !name, let parsed = IPAddress(target) { return .address(parsed) }
        if address { finish(.usage, "\(target) is not an IPv4 or IPv6 address") }
        guard let username = Username(target) else {
            finish(.usage, "\(target) is neither an address nor a username (\(Username.rule))")
        }
        return .username(username)
    }
}

/// Prints one object as JSON (the answer as chatd sent it, for --json).
func printJSON(_ object: ControlObject) {
    print(String(decoding: object.line.dropLast(), as: UTF8.self))
}
