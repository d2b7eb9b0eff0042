// A lossy, reordering network between chat clients and chatd, in user
// space (the kernel here has no netem), for the fault tests.
//
// Each member gets two sockets: a front socket, which is the "server" the
// member's client talks to, and a back socket bound to the member's own
// loopback address, from which the relay talks to chatd, so that chatd
// still sees one distinct client address per member. Every datagram that
// arrives on either side is dropped, duplicated and delayed (each copy on
// its own draw) by a seeded generator, then sent on from the other socket:
// what the back socket hears goes to the endpoint the front socket last
// heard the member from. Delays differ per copy, so datagrams overtake
// each other: that is the reordering, and the relay counts it.
//
// One thread, poll(2) on every socket with a timeout until the next
// delayed datagram is due; `stop()` ends it and returns the counts. The
// decisions come from the seed alone, in the order datagrams arrive, so a
// failing seed replays the same kinds of faults (their timing still varies).

import ChatCore
import ChatSystem
import Foundation
import Synchronization

/// The faults a relay injects, the same in both directions.
struct FaultPlan: Sendable, CustomStringConvertible {
    /// Share of datagrams dropped.
    var loss = 0.10
    /// Share of the datagrams kept that are sent twice.
    var duplication = 0.05
    /// Each copy waits a uniform delay from this range (20 ms ± 10 ms by default).
    var delayMilliseconds: ClosedRange<Int> = 10...30

    var description: String {
        "\(Int(loss * 100)) % loss, \(Int(duplication * 100)) % duplication, "
            + "\(delayMilliseconds.lowerBound)–\(delayMilliseconds.upperBound) ms delay"
    }
}

final class LossyRelay: Sendable {
    /// What the relay did, for both directions together.
    struct Counts: Sendable, CustomStringConvertible {
        /// Datagrams that reached the relay.
        var received = 0
        var dropped = 0
        /// Extra copies sent.
        var duplicated = 0
        /// Datagrams sent on (copies included).
        var sent = 0
        /// Datagrams sent on after one that reached the relay later, on the same path.
        var reordered = 0

        var description: String {
            "\(received) datagrams relayed: \(dropped) dropped, \(duplicated) duplicated, \(reordered) reordered, \(sent) sent"
        }
    }

    /// The endpoint each member's client must use as its server, in the
    /// order of `memberAddresses`.
    let fronts: [Endpoint]
    let seed: UInt64
    let plan: FaultPlan
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)
    private let counts = Mutex(Counts())

    /// - Parameters:
    ///   - server: chatd's endpoint.
    ///   - memberAddresses: each member's own loopback address (the back
    ///     socket binds it; the member's client binds it too, on another port).
    ///   - frontAddress: where the front sockets listen.
    init(
        server: Endpoint, memberAddresses: [String], frontAddress: String = "127.0.0.1", plan: FaultPlan = FaultPlan(),
        seed: UInt64
    ) throws {
        let fronts = try memberAddresses.map { _ in try UDPSocket(binding: Endpoint(IPAddress(frontAddress)!, port: 0)) }
        let backs = try memberAddresses.map { try UDPSocket(binding: Endpoint(IPAddress($0)!, port: 0)) }
        self.fronts = try fronts.map { try $0.localEndpoint }
        self.seed = seed
        self.plan = plan
        let thread = Thread { [self] in
            run(fronts: fronts, backs: backs, server: server)
            finished.signal()
        }
        thread.name = "lossy relay"
        thread.start()
    }

    /// Stops the thread (within a few milliseconds), closes its sockets and
    /// returns what it did.
    @discardableResult
    func stop() -> Counts {
        if running.exchange(false, ordering: .acquiringAndReleasing) { finished.wait() }
        return counts.withLock { $0 }
    }

    /// The counts so far.
    var snapshot: Counts { counts.withLock { $0 } }

    private struct Delayed {
        let due: ContinuousClock.Instant
        /// The socket to send from: index into fronts (even) and backs (odd), as `2 × member + side`.
        let from: Int
        let to: Endpoint
        let bytes: [UInt8]
        /// Arrival number on its path (member and direction), for counting reordering.
        let arrival: Int
    }

    private func run(fronts: [UDPSocket], backs: [UDPSocket], server: Endpoint) {
        defer {
            for socket in fronts + backs { try? socket.close() }
        }
        var random = SplitMix64(seed: seed)
        func chance(_ p: Double) -> Bool { Double(random.next() >> 11) / Double(1 << 53) < p }
        var clients: [Endpoint?] = Array(repeating: nil, count: fronts.count)
        var pending: [Delayed] = []
        // Per path (2 × member + 0 for member → chatd, + 1 for chatd → member).
        var arrivals = Array(repeating: 0, count: 2 * fronts.count)
        var newestSent = Array(repeating: -1, count: 2 * fronts.count)
        let fds = fronts.map(\.fd) + backs.map(\.fd)
        while running.load(ordering: .acquiring) {
            let now = ContinuousClock.now
            // Send what is due, in order of due time.
            pending.sort { $0.due < $1.due }
            var sentCount = 0
            while sentCount < pending.count, pending[sentCount].due <= now {
                let item = pending[sentCount]
                let socket = item.from % 2 == 0 ? backs[item.from / 2] : fronts[item.from / 2]
                _ = try? socket.send(item.bytes, to: item.to)
                counts.withLock {
                    $0.sent += 1
                    if item.arrival < newestSent[item.from] { $0.reordered += 1 }
                }
                newestSent[item.from] = max(newestSent[item.from], item.arrival)
                sentCount += 1
            }
            pending.removeFirst(sentCount)
            let wait = pending.first.map { max(0, ($0.due - now).roundedUpMilliseconds) } ?? 20
            guard let ready = try? Posix.pollReadable(fds: fds, timeoutMilliseconds: Int32(min(wait, 20))) else {
                continue
            }
            let arrived = ContinuousClock.now
            for (index, isReady) in ready.enumerated() where isReady {
                let member = index % fronts.count
                let fromMember = index < fronts.count
                let socket = fromMember ? fronts[member] : backs[member]
                while case .processed(let (bytes, source))? = try? socket.receive(maxSize: 2048) {
                    let path = 2 * member + (fromMember ? 0 : 1)
                    let destination: Endpoint
                    if fromMember {
                        clients[member] = source
                        destination = server
                    } else {
                        guard source == server, let client = clients[member] else { continue }
                        destination = client
                    }
                    let arrival = arrivals[path]
                    arrivals[path] += 1
                    counts.withLock { $0.received += 1 }
                    if chance(plan.loss) {
                        counts.withLock { $0.dropped += 1 }
                        continue
                    }
                    let copies = chance(plan.duplication) ? 2 : 1
                    if copies == 2 { counts.withLock { $0.duplicated += 1 } }
                    for _ in 0..<copies {
                        let span = UInt64(plan.delayMilliseconds.upperBound - plan.delayMilliseconds.lowerBound + 1)
                        let delay = plan.delayMilliseconds.lowerBound + Int(random.next() % span)
                        pending.append(
                            Delayed(
                                due: arrived + .milliseconds(delay), from: path, to: destination, bytes: bytes,
                                arrival: arrival))
                    }
                }
            }
        }
    }
}
