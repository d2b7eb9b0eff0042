// The load generator's engine: many simulated clients, one thread, one epoll set.
//
// Each client is a nonblocking UDP socket bound to its own loopback address
// (the server tells clients apart by source address) and keeps `window`
// requests in flight: every reply is matched to its request by id, its round
// trip recorded, and the freed slot immediately sends the next request (a
// closed loop, like loadgen.c). A request that gets no reply within the
// timeout is counted lost and its slot sends a new one. Ids are per client
// and never repeat within a run, so a late reply to a lost request is
// recognised as stale and ignored.
//
// The hot path allocates nothing: request bytes are written into one reused
// buffer, replies are read into another and compared byte by byte with the
// expected answer (see Wire.swift), slots live in a flat buffer, and times
// come from SystemClock.monotonicNow() as nanoseconds. Latencies go into an
// HDR histogram in nanoseconds (3 significant digits); reports show
// microseconds.
//
// The engine knows nothing of output: the command calls `register`, `pump`
// and `startRecording` in turn and reads `counters` and `histogram`, and a
// callback receives a progress sample once a second.

import ChatCore
import ChatSystem
import Histogram

/// What the simulated clients ask, matching loadgen.c's modes so that both
/// generators measure the same work.
enum Mix: String, CaseIterable, Sendable {
    /// CONNECT from registered clients: every request is a registry hit.
    case connect
    /// CONNECT from clients that never registered: every reply is CLIENT_NOT_FOUND.
    case miss
    /// Every request is an INTRODUCE, alternating each client between its two
    /// names (`u<n>`, `u<n>b`), so every one is a rename.
    case introduce
    /// 90 % CONNECT hits and 10 % INTRODUCE (a request whose id is a multiple
    /// of 10), the INTRODUCEs alternating names as in `introduce`.
    case mixed
}

/// What happened during the recorded part of a run.
struct Counters: Sendable {
    /// Requests handed to the kernel.
    var sent = 0
    /// Replies matched to a request in flight (expected or not).
    var received = 0
    /// Requests with no reply within the timeout.
    var lost = 0
    /// Replies the mix does not expect, and replies that do not parse.
    var errors = 0
    /// Replies to requests no longer in flight (already counted lost), or from another address.
    var stale = 0
    /// Sends the kernel refused (a full send buffer, or an error); those requests end up lost.
    var sendFailures = 0
}

/// One second's worth of progress, for the progress line.
struct ProgressSample: Sendable {
    enum Phase: Sendable { case registering, warmingUp, measuring }
    var phase: Phase
    /// Seconds since the phase began.
    var elapsed: Double
    var registered: Int
    var clients: Int
    /// Replies received in the last second (recorded or not).
    var repliesLastSecond: Int
    var counters: Counters
}

final class LoadEngine {
    private enum Kind: UInt8 { case connect, introduceFirst, introduceSecond, register }

    private struct Slot {
        var id: UInt32 = 0
        var kind: Kind = .connect
        var active = false
        var sent: Int64 = 0
    }

    let clientCount: Int
    let window: Int
    let mix: Mix
    /// Nanoseconds after which a request is lost.
    let timeout: Int64
    private let server: Endpoint
    private let sockets: [UDPSocket]
    private let addresses: [UInt32]
    /// Each client's two names, flattened: 2c is `u<n>`, 2c+1 is `u<n>b`.
    private let names: [[UInt8]]
    private let epoll: Epoll
    private var events: [EpollEvent] = []
    /// clientCount × window slots, client-major.
    private let slots: UnsafeMutableBufferPointer<Slot>
    private let lastID: UnsafeMutableBufferPointer<UInt32>
    private let onSecondName: UnsafeMutableBufferPointer<Bool>
    private let output: UnsafeMutableRawBufferPointer
    private let input: UnsafeMutableRawBufferPointer

    private(set) var histogram: Histogram<UInt64>
    private(set) var counters = Counters()
    /// The first unexpected reply or send error, to show what went wrong.
    private(set) var firstError: String?
    private var recording = false
    /// Slots in use per client: 1 while registering, `window` afterwards.
    private var slotsInUse = 1
    private var registered = 0
    /// Set when the server refused a registration; `register` stops at once.
    private var registrationRefused = false
    private var isRegistered: [Bool]
    private var repliesThisSecond = 0
    private var phase = ProgressSample.Phase.registering
    private var phaseStart: Int64 = 0
    private let scanInterval: Int64

    /// Opens and binds one socket per source address.
    /// - Parameter timeout: how long a request may go unanswered before it is lost.
    init(server: Endpoint, sources: [UInt32], window: Int, mix: Mix, timeout: Duration) throws {
        precondition(!sources.isEmpty && window > 0)
        self.server = server
        self.addresses = sources
        self.clientCount = sources.count
        self.window = window
        self.mix = mix
        self.timeout = timeout.nanoseconds
        // Look for lost requests a few times per timeout, but not too often:
        // the scan walks every slot.
        scanInterval = min(100_000_000, max(2_000_000, self.timeout / 10))
        names = sources.flatMap { [ClientAddresses.name(for: $0), ClientAddresses.alternateName(for: $0)] }
        isRegistered = Array(repeating: false, count: sources.count)
        histogram = Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000_000, numberOfSignificantValueDigits: .three)
        epoll = try Epoll(maxEvents: 256)
        var sockets: [UDPSocket] = []
        sockets.reserveCapacity(sources.count)
        for (index, source) in sources.enumerated() {
            let socket: UDPSocket
            do {
                socket = try UDPSocket(binding: Endpoint(.v4(source), port: 0))
            } catch let error as SystemError where error.errno == 24 || error.errno == 23 {  // EMFILE, ENFILE
                throw BenchError("cannot open socket \(index + 1) of \(sources.count): \(error); raise the limit (ulimit -n) or use fewer --clients")
            }
            try epoll.add(fd: socket.fd, events: .readable, tag: UInt64(index))
            sockets.append(socket)
        }
        self.sockets = sockets
        slots = .allocate(capacity: sources.count * window)
        slots.initialize(repeating: Slot())
        lastID = .allocate(capacity: sources.count)
        // Like loadgen.c, each client's ids start at a different place.
        for index in 0..<sources.count { lastID[index] = UInt32(truncatingIfNeeded: index &* 1_000_003) }
        onSecondName = .allocate(capacity: sources.count)
        onSecondName.initialize(repeating: false)
        output = .allocate(byteCount: 128, alignment: 8)
        input = .allocate(byteCount: 2048, alignment: 8)
    }

    deinit {
        slots.deallocate()
        lastID.deallocate()
        onSecondName.deallocate()
        output.deallocate()
        input.deallocate()
        for socket in sockets { try? socket.close() }
    }

    // MARK: - Phases

    /// Registers every client (INTRODUCE `u<n>`, one at a time per client,
    /// retried after each timeout) within `limit`. Throws on a refusal
    /// (TAKEN, SERVER_FULL, …): measuring with unregistered clients would
    /// measure misses instead of hits.
    func register(within limit: Duration, progress: (ProgressSample) -> Void) throws {
        phase = .registering
        slotsInUse = 1
        let start = now()
        phaseStart = start
        for client in 0..<clientCount { send(client: client, slot: 0) }
        let deadline = start + limit.nanoseconds
        try pump(until: deadline, progress: progress) { $0.registered == $0.clientCount || $0.registrationRefused }
        if registrationRefused, let firstError {
            let hint =
                firstError.contains("TAKEN") ? "; another address holds that name: use another --source-base, or a fresh server"
                : firstError.contains("SERVER_FULL") ? "; raise the server's registry.max_users" : ""
            throw BenchError(firstError + hint)
        }
        guard registered == clientCount else {
            throw BenchError(
                "only \(registered) of \(clientCount) clients registered within \(limit): is the server at \(server) running?")
        }
    }

    /// Fills every client's window and runs the closed loop for `duration`
    /// (call again to continue). Nothing is recorded until `startRecording`.
    func pump(for duration: Duration, phase: ProgressSample.Phase, progress: (ProgressSample) -> Void) throws {
        let start = now()
        self.phase = phase
        phaseStart = start
        if slotsInUse != window || !anyActive() {
            // First load phase: drop what registration left and open the window.
            for index in slots.indices { slots[index].active = false }
            slotsInUse = window
            for client in 0..<clientCount {
                for slot in 0..<window { send(client: client, slot: slot) }
            }
        }
        try pump(until: start + duration.nanoseconds, progress: progress) { _ in false }
    }

    /// Clears the counters and the histogram and records from now on.
    func startRecording() {
        counters = Counters()
        histogram.reset()
        firstError = nil
        recording = true
    }

    func stopRecording() {
        recording = false
    }

    // MARK: - The loop

    private func pump(until end: Int64, progress: (ProgressSample) -> Void, done: (LoadEngine) -> Bool) throws {
        var time = now()
        var nextScan = time + scanInterval
        var nextSecond = time + 1_000_000_000
        while time < end, !done(self) {
            let next = min(end, nextScan, nextSecond)
            let waitMilliseconds = Int32(clamping: max(0, (next - time + 999_999) / 1_000_000))
            try epoll.wait(timeoutMilliseconds: waitMilliseconds, into: &events)
            for event in events { drain(client: Int(event.tag)) }
            time = now()
            if time >= nextScan {
                scanForLost(now: time)
                nextScan = time + scanInterval
            }
            if time >= nextSecond {
                nextSecond += 1_000_000_000
                progress(sample(now: time))
                repliesThisSecond = 0
            }
        }
    }

    private func sample(now time: Int64) -> ProgressSample {
        ProgressSample(
            phase: phase, elapsed: Double(time - phaseStart) / 1e9, registered: registered, clients: clientCount,
            repliesLastSecond: repliesThisSecond, counters: counters)
    }

    /// Reads every queued reply of one client, answering each freed slot with a new request.
    private func drain(client: Int) {
        let socket = sockets[client]
        while true {
            let result: IOResult<(count: Int, from: Endpoint)>
            do {
                result = try socket.receive(into: input)
            } catch {
                noteError("receive from \(server): \(error)")
                return
            }
            guard case .processed(let (count, source)) = result else { return }
            let time = now()
            guard source == server else {
                if recording { counters.stale += 1 }
                continue
            }
            handle(UnsafeRawBufferPointer(rebasing: input[..<min(count, input.count)]), client: client, now: time)
        }
    }

    private func handle(_ reply: UnsafeRawBufferPointer, client: Int, now time: Int64) {
        guard let (id, rest) = Wire.readReplyHeader(reply) else {
            if recording {
                counters.errors += 1
                noteError(reply)
            }
            return
        }
        let base = client * window
        var found = -1
        for slot in 0..<slotsInUse where slots[base + slot].active && slots[base + slot].id == id {
            found = slot
            break
        }
        guard found >= 0 else {
            if recording { counters.stale += 1 }
            return
        }
        let index = base + found
        let request = slots[index]
        slots[index].active = false
        let first = names[2 * client]
        let second = names[2 * client + 1]
        let expected: Bool
        switch request.kind {
        case .register, .introduceFirst:
            expected = Wire.rest(reply, from: rest, is: Wire.success, first)
        case .introduceSecond:
            expected = Wire.rest(reply, from: rest, is: Wire.success, second)
        case .connect:
            switch mix {
            case .miss: expected = Wire.rest(reply, from: rest, is: Wire.notFound)
            case .connect: expected = Wire.rest(reply, from: rest, is: Wire.success, first)
            case .mixed, .introduce:
                // A rename may be in flight from the same client: either name is right.
                expected = Wire.rest(reply, from: rest, is: Wire.success, first)
                    || Wire.rest(reply, from: rest, is: Wire.success, second)
            }
        }
        if request.kind == .register {
            if expected {
                if !isRegistered[client] {
                    isRegistered[client] = true
                    registered += 1
                }
            } else {
                // A refusal (TAKEN, SERVER_FULL, …) would only repeat: `register` reports it.
                let name = String(decoding: first, as: UTF8.self)
                noteError(reply, prefix: "client \(IPAddress.v4(addresses[client])) cannot register \(name): the server answered ")
                registrationRefused = true
            }
            return
        }
        repliesThisSecond += 1
        if recording {
            counters.received += 1
            if !expected {
                counters.errors += 1
                noteError(reply)
            }
            histogram.record(UInt64(max(1, time - request.sent)))
        }
        send(client: client, slot: found)
    }

    private func scanForLost(now time: Int64) {
        for client in 0..<clientCount {
            let base = client * window
            for slot in 0..<slotsInUse {
                let entry = slots[base + slot]
                guard entry.active, time - entry.sent > timeout else { continue }
                if recording && entry.kind != .register { counters.lost += 1 }
                send(client: client, slot: slot)
            }
        }
    }

    /// Sends the next request of `client` from `slot`.
    private func send(client: Int, slot: Int) {
        let id = lastID[client] &+ 1
        lastID[client] = id
        let kind: Kind
        if phase == .registering {
            kind = .register
        } else {
            let introduce =
                switch mix {
                case .connect, .miss: false
                case .introduce: true
                case .mixed: id % 10 == 0
                }
            if introduce {
                onSecondName[client].toggle()
                kind = onSecondName[client] ? .introduceSecond : .introduceFirst
            } else {
                kind = .connect
            }
        }
        let name: [UInt8]? =
            switch kind {
            case .connect: nil
            case .introduceFirst, .register: names[2 * client]
            case .introduceSecond: names[2 * client + 1]
            }
        let length = Wire.writeRequest(id: id, introducing: name, into: output)
        // Stamped just before the send, so that the round trip holds none of the generator's own work.
        slots[client * window + slot] = Slot(id: id, kind: kind, active: true, sent: now())
        do {
            let result = try sockets[client].send(UnsafeRawBufferPointer(rebasing: output[..<length]), to: server)
            if case .processed = result {
                if recording { counters.sent += 1 }
                return
            }
            if recording { counters.sendFailures += 1 }
        } catch {
            if recording { counters.sendFailures += 1 }
            noteError("send to \(server): \(error)")
        }
    }

    private func anyActive() -> Bool {
        slots.contains { $0.active }
    }

    private func now() -> Int64 {
        SystemClock.monotonicNow().nanoseconds
    }

    private func noteError(_ reply: UnsafeRawBufferPointer, prefix: String = "unexpected reply: ") {
        guard firstError == nil else { return }
        let text = String(decoding: reply.prefix(120), as: UTF8.self)
        firstError = prefix + "\"" + text.map { $0.isASCII && !$0.isNewline ? String($0) : "?" }.joined() + "\""
    }

    private func noteError(_ message: String) {
        if firstError == nil { firstError = message }
    }
}
