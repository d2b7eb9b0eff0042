// The shell's wiring, which ChatService's own tests cannot reach: the loop
// sleeping until the service's deadline with no timer descriptor, held
// replies leaving through the sendmmsg batch on the socket they came in on,
// storage work reaching the helper threads and their outcomes coming back,
// the settling at stop, and a SIGHUP reaching the service. The server runs on
// a thread of its own on loopback, with a clock the test moves, and stops or
// reloads on a signal sent to that thread alone.

import ChatConfig
import ChatCore
import ChatSystem
import Glibc
import Logging
import Synchronization
import Testing

@testable import ChatServer

/// A monotonic clock the test sets.
private final class FakeClock: Sendable {
    let now = Mutex(Instant(nanoseconds: 1_000_000_000))
    func advance(_ duration: Duration) { now.withLock { $0 = $0 + duration } }
    func read() -> Instant { now.withLock { $0 } }
}

/// Log lines, kept for the test to read.
private final class LogLines: Sendable {
    let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
}

private struct CapturingLogHandler: LogHandler {
    let sink: LogLines
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        sink.lines.withLock { $0.append(event.message.description) }
    }
}

/// The config a SIGHUP reads, which the test may change first.
private final class ConfigFile: Sendable {
    let contents: Mutex<Config>
    init(_ config: Config) { contents = Mutex(config) }
    func read() -> Config { contents.withLock { $0 } }
}

/// A Server on a thread of its own, with its state in a temporary folder.
private final class RunningServer: @unchecked Sendable {
    // @unchecked: `thread` is written once by the server thread before
    // `started` is signalled, and read only after.
    let folder: String
    let clock = FakeClock()
    let log = LogLines()
    let port: UInt16
    var snapshotPath: String { "\(folder)/registry.json" }
    var journalPath: String { "\(folder)/registry.journal" }
    private var thread = pthread_t()
    private let started = Mutex(false)
    let result = Mutex<Result<Bool, any Error>?>(nil)
    /// What the server ran with at the end, read once it has stopped.
    let finalSettings = Mutex<(Server.Settings, ChatService.Configuration)?>(nil)
    let configFile: ConfigFile

    init(durability: Durability = .sync) throws {
        folder = try FileSystem.makeTemporaryDirectory(prefix: "chatd-server-test")
        var config = Config.defaults
        config.server = .init(bind: .loopbackIPv4, port: 0)
        config.registry.snapshotPath = "\(folder)/registry.json"
        config.registry.snapshotIntervalSeconds = 30
        config.registry.durability = durability
        configFile = ConfigFile(config)
        let settings = Server.Settings(config)
        let socket = try UDPSocket(binding: settings.listen)
        port = try socket.localEndpoint.port
        var registry = Registry(maxUsers: settings.maxUsers)
        var history: (messages: [ChatMessage], lastSeq: UInt64) = ([], 0)
        let (journal, _) = try JournalWriter.recover(
            at: settings.journalPath, into: &registry, history: &history, durability: durability,
            snapshotPath: settings.snapshotPath, historyPath: settings.historyPath)
        let clock = clock
        let sink = log
        let file = configFile
        let box = Unmanaged.passRetained(
            Launch(
                settings: settings, registry: registry, socket: socket, journal: journal, sink: sink,
                clock: { clock.read() }, reloadConfig: { file.read() }, owner: self))
        let code = pthread_create(&thread, nil, { argument in
            Unmanaged<Launch>.fromOpaque(argument!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        precondition(code == 0, "pthread_create: \(code)")
        while !started.withLock({ $0 }) { usleep(1000) }
    }

    /// What the server thread needs, handed over whole.
    private final class Launch: @unchecked Sendable {
        let settings: Server.Settings
        let registry: Registry
        let socket: UDPSocket
        let journal: JournalWriter?
        let sink: LogLines
        let clock: @Sendable () -> Instant
        let reloadConfig: @Sendable () -> Config
        let owner: RunningServer

        init(
            settings: Server.Settings, registry: Registry, socket: UDPSocket, journal: JournalWriter?,
            sink: LogLines, clock: @escaping @Sendable () -> Instant, reloadConfig: @escaping @Sendable () -> Config,
            owner: RunningServer
        ) {
            self.settings = settings
            self.registry = registry
            self.socket = socket
            self.journal = journal
            self.sink = sink
            self.clock = clock
            self.reloadConfig = reloadConfig
            self.owner = owner
        }

        func run() {
            let outcome: Result<Bool, any Error>
            do {
                // Blocked on this thread only: the test signals this thread alone.
                let signals = try SignalFD(signals: [SIGUSR2, SIGHUP])
                let sink = sink
                let logger = Logger(label: "chatd-test") { _ in CapturingLogHandler(sink: sink) }
                let server = try Server(
                    settings: settings, registry: registry, sockets: [socket], origin: .config, signals: signals,
                    journal: journal, logger: logger, reloadConfig: reloadConfig, clock: clock)
                owner.started.withLock { $0 = true }
                outcome = .success(try server.run())
                let final = (server.settings, server.service.configuration)
                owner.finalSettings.withLock { $0 = final }
            } catch {
                owner.started.withLock { $0 = true }
                outcome = .failure(error)
            }
            owner.result.withLock { $0 = outcome }
        }
    }

    /// Makes the server re-read `configFile`, as SIGHUP does.
    func reload() {
        pthread_kill(thread, SIGHUP)
    }

    /// Stops the server as SIGTERM would and returns what `run()` returned.
    func stop() throws -> Bool {
        pthread_kill(thread, SIGUSR2)
        pthread_join(thread, nil)
        return try result.withLock { $0! }.get()
    }

    deinit {
        // The whole folder: the server writes more than these two paths (the history).
        try? FileSystem.removeItem(atPath: folder)
    }
}

/// A client socket on its own loopback address.
private struct Client {
    let socket: UDPSocket
    let server: Endpoint

    init(_ address: String, port: UInt16) throws {
        socket = try UDPSocket(binding: Endpoint(IPAddress(address)!, port: 0))
        server = Endpoint(.loopbackIPv4, port: port)
    }

    func request(_ text: String) throws -> String? {
        _ = try socket.send(Array(text.utf8), to: server)
        guard try socket.waitReadable(timeoutMilliseconds: 5000),
            case .processed(let (bytes, _)) = try socket.receive()
        else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Waits up to 5 s for `condition`.
private func eventually(_ condition: () throws -> Bool) rethrows -> Bool {
    for _ in 0..<500 {
        if try condition() { return true }
        usleep(10_000)
    }
    return false
}

private func fileText(_ path: String) throws -> String {
    try FileSystem.readFile(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

@Suite(.serialized) struct ServerTests {
    @Test func heldRepliesLeaveThroughTheSendBatchOnceSynced() throws {
        let server = try RunningServer()
        let alice = try Client("127.0.0.61", port: server.port)
        #expect(try alice.request("CHAT/1 101 INTRODUCE alice") == "CHAT/1 101 SUCCESS alice")
        #expect(try alice.request("CHAT/1 102 CONNECT") == "CHAT/1 102 SUCCESS alice")
        #expect(try fileText(server.journalPath).contains(#""username": "alice""#), "synced before the reply")
        #expect(eventually { server.log.all.contains("user registered") })
        #expect(try server.stop())
    }

    @Test func theLoopWakesForTheServiceDeadlineWithoutATimerDescriptor() throws {
        let server = try RunningServer()
        let bob = try Client("127.0.0.62", port: server.port)
        #expect(try bob.request("CHAT/1 201 INTRODUCE bob") == "CHAT/1 201 SUCCESS bob")
        #expect(try fileText(server.snapshotPath).isEmpty, "no snapshot before the interval")
        server.clock.advance(.seconds(31))
        // Nothing else happens: the loop must wake by itself, at most a
        // housekeeping tick later (its epoll_wait timeout), and find the
        // snapshot deadline passed. With no timeout it would sleep forever.
        #expect(try eventually { try fileText(server.snapshotPath).contains(#""username": "bob""#) })
        #expect(eventually { server.log.all.contains("snapshot written") })
        // The snapshot covers the journal, so the compaction empties it of records.
        #expect(try eventually { try !fileText(server.journalPath).contains("bob") })
        #expect(try server.stop())
    }

    @Test func stoppingAnswersWhatWasHandledThenWritesTheFinalSnapshot() throws {
        let server = try RunningServer()
        let carol = try Client("127.0.0.63", port: server.port)
        _ = try carol.socket.send(Array("CHAT/1 301 INTRODUCE carol".utf8), to: carol.server)
        // Handled (its line is being synced, or is), its reply not yet read: stop now.
        #expect(try eventually { try fileText(server.journalPath).contains("carol") })
        #expect(try server.stop())
        #expect(try carol.socket.waitReadable(timeoutMilliseconds: 5000))
        #expect(try carol.socket.receive().value.map { String(decoding: $0.0, as: UTF8.self) } == "CHAT/1 301 SUCCESS carol")
        #expect(try fileText(server.snapshotPath).contains(#""username": "carol""#))
        #expect(try !fileText(server.journalPath).contains("carol"), "the final snapshot covers the journal")
        #expect(server.log.all.contains("stopping"))
    }

    @Test func periodicDurabilityAnswersAtOnceAndSavesAtStop() throws {
        let server = try RunningServer(durability: .periodic)
        let dave = try Client("127.0.0.64", port: server.port)
        #expect(try dave.request("CHAT/1 401 INTRODUCE dave") == "CHAT/1 401 SUCCESS dave")
        #expect(try server.stop())
        #expect(try fileText(server.snapshotPath).contains(#""username": "dave""#))
        #expect(!FileSystem.fileExists(atPath: server.journalPath))
    }

    @Test func reloadAppliesChatAndDeliveryToTheServiceAtOnce() throws {
        let server = try RunningServer()
        var changed = server.configFile.read()
        changed.chat = .init(history: 10, presenceTTLSeconds: 30, messagesPerSecond: 0, messagesBurst: 3)
        changed.delivery = .init(timeoutMilliseconds: 250, backoff: 1.5, maxAttempts: 3, window: 2)
        server.configFile.contents.withLock { $0 = changed }
        server.reload()
        #expect(eventually { server.log.all.contains("config reloaded") })
        #expect(!server.log.all.contains { $0.hasPrefix("reload refused") })
        #expect(try server.stop())
        let (settings, service) = try #require(server.finalSettings.withLock { $0 })
        #expect(settings.chat == changed.chat)
        #expect(settings.delivery == changed.delivery)
        #expect(service.room == RoomConfiguration(
            history: 10, presenceTTL: .seconds(30), messagesPerSecond: 0, messagesBurst: 3,
            deliveryTimeout: .milliseconds(250), backoff: 1.5, maxAttempts: 3, window: 2))
    }

    @Test func epollTimeoutsRoundUpSoTheLoopNeverWakesEarly() {
        let now = Instant(nanoseconds: 5_000_000_000)
        #expect(Server.milliseconds(until: now, from: now) == 0)
        #expect(Server.milliseconds(until: now + .nanoseconds(1), from: now) == 1)
        #expect(Server.milliseconds(until: now + .milliseconds(30), from: now) == 30)
        #expect(Server.milliseconds(until: now + .microseconds(30_001), from: now) == 31)
        #expect(Server.milliseconds(until: Instant(nanoseconds: 1), from: now) == 0, "overdue: at once")
        #expect(Server.milliseconds(until: Instant(nanoseconds: .max), from: now) == .max)
    }
}

@Suite struct SettingsTests {
    @Test func theRoomsDefaultsAreTheConfigsDefaults() {
        // Two places name these defaults; the config file's are the ones documented.
        #expect(Server.Settings(.defaults).service.room == RoomConfiguration())
    }

    @Test func chatAndDeliveryBecomeTheRoomWithDurations() {
        var config = Config.defaults
        config.registry.snapshotPath = "/srv/chat/state.json"
        config.chat = .init(history: 1, presenceTTLSeconds: 86_400, messagesPerSecond: 0.25, messagesBurst: 100_000)
        config.delivery = .init(timeoutMilliseconds: 10, backoff: 10, maxAttempts: 100, window: 1024)
        let settings = Server.Settings(config)
        #expect(settings.historyPath == "/srv/chat/state.history")
        #expect(settings.service.room == RoomConfiguration(
            history: 1, presenceTTL: .seconds(86_400), messagesPerSecond: 0.25, messagesBurst: 100_000,
            deliveryTimeout: .milliseconds(10), backoff: 10, maxAttempts: 100, window: 1024))
    }
}
