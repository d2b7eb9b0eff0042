// chat: the CHAT/1 client tool.
//
// Each subcommand is one handshake goal of the client library; this file
// only gathers settings (config file, then flags), runs it, and turns the
// result into a message and an exit status scripts can rely on.

import ArgumentParser
import ChatClient
import ChatConfig
import ChatCore
import ChatSystem

/// Exit statuses, from sysexits(3) where one fits.
enum Status: Int32 {
    case success = 0
    case notRegistered = 3
    case usage = 64  // swift-argument-parser's own status for bad usage
    case invalidUsername = 65
    case unreachable = 69
    case systemError = 71
    case tryLater = 75  // EX_TEMPFAIL
    case protocolError = 76
    case configError = 78
}

@main
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Join a CHAT/1 server and talk in its chat room.",
        discussion: """
            The server knows clients by their IP address. `chat join NAME` asks whether it knows this \
            address (CONNECT); if not, it registers NAME (INTRODUCE) and asks again. `chat talk NAME` \
            does the same, then joins the server's chat room: lines from stdin are posted, messages \
            arrive on stdout. Every request is retried with a fresh id when no reply comes within the \
            timeout (which grows by the backoff factor each attempt), and late replies to earlier \
            attempts are ignored.

            Settings come from the [client] section of the config file (default \
            \(Config.defaultPath), when it exists); flags override them.

            join, connect and introduce print the username the server holds for this client as the \
            last line of stdout.

            Exit status:
              0   success
              3   connect, talk, say, who: no username for this address (CLIENT_NOT_FOUND)
              64  bad usage (including a message off the rule for `say`)
              65  the username is taken, or breaks the username rule
              69  server unreachable: no reply after the last attempt; for talk,
                  also lines that could not be delivered
              71  local error (e.g. the --bind address is not on this machine)
              75  the server cannot take the registration or the message now
                  (SERVER_FULL, UNAVAILABLE, RATE_LIMITED); try later
              76  the server answered with an error this client did not expect
              78  the config file is invalid

            Usernames: \(Username.rule).

            Examples:
              chat join alice
              chat connect --server 192.0.2.10
              chat join bob --bind 127.0.0.3 --timeout-ms 200 --attempts 3
              chat talk alice
              chat talk logger --listen --json >> room.log
              chat say the build is green
              chat who
            """,
        version: ChatdVersion.string,
        subcommands: [Join.self, Connect.self, Introduce.self, Talk.self, Say.self, Who.self])
}

struct ClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Config file to read the [client] section from.", valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp("Server address or host name. Default: client.server (\(Config.defaults.client.server)).", valueName: "host"))
    var server: String?

    @Option(help: ArgumentHelp("Server UDP port. Default: client.port (\(Config.defaults.client.port)).", valueName: "n"))
    var port: Int?

    @Option(help: ArgumentHelp("Local address to send from; the server knows you by it. Default: any.", valueName: "addr"))
    var bind: String?

    @Option(help: ArgumentHelp("Wait for the first reply, in milliseconds; later attempts wait longer by the backoff factor. Default: client.timeout_ms (\(Config.defaults.client.timeoutMilliseconds)).", valueName: "n"))
    var timeoutMs: Int?

    @Option(help: ArgumentHelp("Attempts per request before giving up. Default: client.max_attempts (\(Config.defaults.client.maxAttempts)).", valueName: "n"))
    var attempts: Int?

    func validate() throws {
        func bounds(_ range: ClosedRange<Int>) -> String { "from \(range.lowerBound) to \(range.upperBound)" }
        if let port, !Config.portRange.contains(port) {
            throw ValidationError("--port must be \(bounds(Config.portRange))")
        }
        if let timeoutMs, !Config.timeoutMillisecondsRange.contains(timeoutMs) {
            throw ValidationError("--timeout-ms must be \(bounds(Config.timeoutMillisecondsRange))")
        }
        if let attempts, !Config.maxAttemptsRange.contains(attempts) {
            throw ValidationError("--attempts must be \(bounds(Config.maxAttemptsRange))")
        }
        if let bind, IPAddress(bind) == nil { throw ValidationError("--bind must be an IP address such as 127.0.0.2 or ::1") }
        // contains(where:), not contains(" "): that overload is Foundation's,
        // and linking it brings ICU's 34 MB of data into chat.
        if let server, server.isEmpty || server.contains(where: \.isWhitespace) {
            throw ValidationError("--server must be an address or host name")
        }
    }

    /// What the config file and the flags add up to.
    struct Resolved {
        var file: Config
        var server: Endpoint
        var source: IPAddress?
        var settings: HandshakeSettings
    }

    /// The effective settings: the config file's [client] section, then the
    /// flags. Exits 78 for a bad config file, 69 for a host that does not resolve.
    func resolve() -> Resolved {
        let file: Config
        do {
            file = try Config.load(path: config, read: FileSystem.readFile(atPath:))
        } catch {
            finish(.configError, "\(error)")
        }
        let host = server ?? file.client.server
        let serverPort = UInt16(port ?? Int(file.client.port))
        let address: IPAddress
        if let literal = IPAddress(host) {
            address = literal
        } else {
            do {
                address = try UDPSocket.resolve(host: host)
            } catch {
                finish(.unreachable, "cannot resolve server \(host): \(error)")
            }
        }
        let settings = HandshakeSettings(
            timeout: .milliseconds(timeoutMs ?? file.client.timeoutMilliseconds),
            maxAttempts: attempts ?? file.client.maxAttempts, backoff: file.client.backoff)
        return Resolved(
            file: file, server: Endpoint(address, port: serverPort), source: bind.flatMap { IPAddress($0) },
            settings: settings)
    }

    /// Runs `goal` with the effective settings and exits with its status.
    func run(_ goal: HandshakeGoal) throws -> Never {
        let resolved = resolve()
        let result: HandshakeResult
        do {
            result = try Client.run(
                goal, server: resolved.server, source: resolved.source, settings: resolved.settings)
        } catch {
            finish(.systemError, "\(error)")
        }
        finish(result, resolved)
    }
}

/// Ends the program as a handshake's result says: the username on stdout
/// and 0, or the reason on stderr and its status.
func finish(_ result: HandshakeResult, _ resolved: ClientOptions.Resolved) -> Never {
    let endpoint = resolved.server
    switch result {
    case .success(let name):
        print(name)
        finish(.success)
    case .notRegistered:
        finish(.notRegistered, notRegisteredMessage(endpoint))
    case .usernameTaken(let name):
        finish(.invalidUsername, "the username \(name) is taken by another client; choose another")
    case .usernameInvalid(let name):
        finish(.invalidUsername, "the server refused \(name) as not a valid username: \(Username.rule)")
    case .serverFull:
        finish(.tryLater, "the server at \(endpoint) is full and accepts no new users; try later")
    case .unavailable:
        finish(.tryLater, "the server at \(endpoint) cannot store registrations right now (UNAVAILABLE); try later")
    case .unexpectedUsername(let expected, let got):
        finish(.protocolError, "the server at \(endpoint) kept confirming \(got) instead of \(expected) after \(resolved.settings.maxAttempts) attempts")
    case .rejected(let reason, let detail):
        finish(.protocolError, "the server at \(endpoint) refused the request: \(reason)\(detail.map { " \($0)" } ?? "")")
    case .unreachable(let attempts):
        finish(.unreachable, unreachableMessage(endpoint, attempts: attempts))
    }
}

func notRegisteredMessage(_ endpoint: Endpoint) -> String {
    "the server at \(endpoint) has no username for this address; register one with `chat join NAME`"
}

func unreachableMessage(_ endpoint: Endpoint, attempts: Int) -> String {
    "server \(endpoint) unreachable: no reply after \(attempts) attempts"
}

/// Reads a username argument; a name off the rule ends the program with
/// status 65 rather than the generic usage status, as the exit codes promise.
func checkedUsername(_ text: String) -> Username {
    guard let name = Username(text) else {
        finish(.invalidUsername, "\"\(text)\" is not a valid username: \(Username.rule)")
    }
    return name
}

func finish(_ status: Status, _ message: String? = nil) -> Never {
    if let message { FileSystem.writeStandardError("chat: \(message)\n") }
    Chat.exit(withError: status == .success ? nil : ExitCode(status.rawValue))
}

extension Chat {
    struct Join: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Connect, registering NAME first if the server does not know this address.")

        @Argument(help: ArgumentHelp("The username to register if needed. \(Username.rule).", valueName: "name"))
        var name: String

        @OptionGroup var options: ClientOptions

        func run() throws { try options.run(.join(checkedUsername(name))) }
    }

    struct Connect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask which username the server holds for this address (exit 3 if none).")

        @OptionGroup var options: ClientOptions

        func run() throws { try options.run(.connect) }
    }

    struct Introduce: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register NAME for this address, or rename this address to NAME.")

        @Argument(help: ArgumentHelp("The username to register. \(Username.rule).", valueName: "name"))
        var name: String

        @OptionGroup var options: ClientOptions

        func run() throws { try options.run(.introduce(checkedUsername(name))) }
    }
}
