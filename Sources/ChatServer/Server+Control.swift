// chatd's control socket (docs/CONTROL.md): chatctl's requests, served by
// the same loop that serves datagrams, and never at their expense.
//
//   listener readable    -> accept; refuse over `maxControlClients`, and any
//                           peer but root and chatd's own user (SO_PEERCRED)
//   connection readable  -> bytes into its ControlLineReader; each whole line
//                           is one request, answered before the next is read
//   connection writable  -> the rest of an answer the socket had no room for
//   each loop turn       -> one slice of each `users` listing whose previous
//                           slice has left, so a million users stream out
//                           between datagram batches, one slice in memory
//   the 1 s tick         -> clients idle for `controlIdleTimeout` are closed;
//                           a listener paused by a failed accept resumes
//   stop                 -> every client is told "stopping" and closed
//
// Most answers are immediate: they read the service's state. `remove` and
// `snapshot` are inputs to the service carrying a ticket; the client waits
// (reading nothing more) until the service reports the ticket's outcome
// among its events: a removal once its journal line is synced, a snapshot
// once written. `reload` runs the same reload as SIGHUP.
//
// Interest in a connection follows what it is doing: readable only between
// requests, writable only while an answer is stuck. A busy client's further
// bytes wait in the kernel's buffer, so a client cannot make chatd buffer
// requests, and a waiting client's hang-up (EPOLLHUP, always reported) is
// seen at once.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

extension Server {
    /// Control clients served at once; more are answered `busy` and closed.
    static let maxControlClients = 16
    /// A client that neither sends a request nor reads its answer for this long is closed.
    static let controlIdleTimeout: Duration = .seconds(10)
    /// Registrations per slice of a `users` listing.
    static let usersSlice = 512

    /// One connected chatctl.
    struct ControlClient {
        let stream: UnixStream
        let uid: UInt32
        var reader = ControlLineReader()
        /// The answer being written, and how much of it has gone.
        var output: [UInt8] = []
        var written = 0
        var lastProgress: Instant
        var task: Task?
        /// Close once the output has gone (refused, a line too long, timed out).
        var closing = false
        /// The peer sent its end of stream: answer what it asked, then close.
        var peerDone = false
        var interest: EpollEvents

        enum Task {
            /// A `users` listing: the next registration to send (counting
            /// down), the pattern, and how many were sent.
            case listing(next: Int, match: ControlPattern?, count: Int)
            /// Waiting for the service to report this ticket's outcome.
            case waiting(UInt64)
        }

        var isFlushed: Bool { written == output.count }
    }

    /// The control side of the server: the listener and its clients.
    struct Control {
        let listener: UnixListener
        var clients: [Int: ControlClient] = [:]
        /// Tickets the service will answer, with the client waiting and the
        /// administrator's uid (for the log, even if the client has gone).
        var tickets: [UInt64: (slot: Int, uid: UInt32)] = [:]
        var nextTicket: UInt64 = 1
        /// accept failed (EMFILE, ENOMEM): the listener is out of the epoll
        /// set until the next tick.
        var acceptPaused = false
        /// A request started here queued storage work (remove, snapshot)
        /// after the turn's storage was polled: poll it again.
        var queuedStorage = false
    }

    // MARK: - Events from epoll

    func acceptControlClients(now: Instant) {
        guard let listener = control?.listener else { return }
        while true {
            let stream: UnixStream
            do {
                guard let accepted = try listener.accept() else { return }
                stream = accepted
            } catch {
                // EMFILE and the like. The listener stays readable, so it
                // leaves the epoll set until the next 1 s tick, rather than
                // wake the loop at once forever; the client waits in the backlog.
                warn(.controlFailed, ["error": "\(error)"])
                if (try? epoll.modify(fd: listener.fd, events: [], tag: Tag.controlListener.rawValue)) != nil {
                    control?.acceptPaused = true
                }
                return
            }
            guard let slot = (0..<Self.maxControlClients).first(where: { control?.clients[$0] == nil }) else {
                refuse(stream, ControlError(.busy, "chatd serves \(Self.maxControlClients) control clients at once; try again"))
                continue
            }
            let uid: UInt32
            do {
                uid = try stream.peerCredentials().uid
            } catch {
                refuse(stream, ControlError(.permissionDenied, "cannot read the peer's credentials: \(error)"))
                continue
            }
            let ownUID = Posix.effectiveUserID()
            guard uid == 0 || uid == ownUID else {
                logger.notice("control client refused: only root and chatd's own user may use the control socket", metadata: [
                    "admin.uid": "\(uid)"
                ])
                refuse(stream, ControlError(.permissionDenied, "permission denied: chatd answers only root and its own user (uid \(ownUID))"))
                continue
            }
            do {
                try epoll.add(fd: stream.fd, events: [.readable, .hangup], tag: Tag.controlBase + UInt64(slot))
            } catch {
                stream.close()
                warn(.controlFailed, ["error": "\(error)"])
                continue
            }
            control?.clients[slot] = ControlClient(stream: stream, uid: uid, lastProgress: now, interest: [.readable, .hangup])
        }
    }

    /// Answers `error` as best it can without waiting, and closes.
    private func refuse(_ stream: UnixStream, _ error: ControlError) {
        _ = error.object.line.withUnsafeBytes { try? stream.write($0) }
        stream.close()
    }

    func handleControl(slot: Int, events: EpollEvents, now: Instant) {
        guard var client = control?.clients[slot] else { return }
        if !client.interest.contains(.readable), !events.isDisjoint(with: [.hangup, .error]) {
            // Not reading, so this is EPOLLHUP or EPOLLERR: the peer has
            // gone while its answer was pending or being written.
            closeControl(slot)
            return
        }
        if events.contains(.writable) {
            guard flush(&client, slot: slot, now: now) else { return }
        }
        if client.interest.contains(.readable), !events.isDisjoint(with: [.readable, .hangup, .error]) {
            guard read(&client, slot: slot, now: now) else { return }
        }
        control?.clients[slot] = client
        proceed(slot, now: now)
    }

    /// Reads what has arrived, up to one line's room. False if the client was closed.
    private func read(_ client: inout ControlClient, slot: Int, now: Instant) -> Bool {
        withUnsafeTemporaryAllocation(byteCount: ControlLineReader.maxLineLength, alignment: 1) { buffer in
            let room = UnsafeMutableRawBufferPointer(rebasing: buffer[..<max(1, client.reader.room)])
            do {
                switch try client.stream.read(into: room) {
                case .processed(0): client.peerDone = true
                case .processed(let count):
                    client.reader.append(UnsafeRawBufferPointer(rebasing: room[..<count]))
                    client.lastProgress = now
                case .wouldBlock: break
                }
                return true
            } catch {
                closeControl(slot)
                return false
            }
        }
    }

    /// Writes what the socket takes of the answer. False if the client was closed.
    @discardableResult
    private func flush(_ client: inout ControlClient, slot: Int, now: Instant) -> Bool {
        while !client.isFlushed {
            let result = client.output[client.written...].withUnsafeBytes { try? client.stream.write($0) }
            switch result {
            case .processed(let count)?:
                client.written += count
                client.lastProgress = now
            case .wouldBlock?:
                return true
            case nil:
                // EPIPE or ECONNRESET: the client went away mid-answer.
                closeControl(slot)
                return false
            }
        }
        client.output.removeAll(keepingCapacity: client.output.capacity <= 64 << 10)
        client.written = 0
        if client.closing {
            closeControl(slot)
            return false
        }
        return true
    }

    /// Moves a client on: its next request, or its close, and its epoll
    /// interest to match.
    private func proceed(_ slot: Int, now: Instant) {
        guard var client = control?.clients[slot] else { return }
        // An answer a ticket just finished goes out now, not at EPOLLOUT.
        guard flush(&client, slot: slot, now: now) else { return }
        while client.task == nil, client.isFlushed, !client.closing, let line = client.reader.nextLine() {
            switch line {
            case .tooLong:
                answer(&client, ControlError(.lineTooLong, "a request line is at most \(ControlLineReader.maxLineLength) bytes").object)
                client.closing = true
            case .line(let bytes):
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                do {
                    let request = try ControlRequest(parsing: bytes)
                    start(request, for: &client, slot: slot, now: now)
                } catch {
                    answer(&client, error.object)
                }
            }
            guard flush(&client, slot: slot, now: now) else { return }
        }
        if client.task == nil, client.isFlushed, client.peerDone {
            closeControl(slot)
            return
        }
        var interest: EpollEvents = []
        if client.task == nil, client.isFlushed, !client.closing, !client.peerDone { interest = [.readable, .hangup] }
        if !client.isFlushed { interest.insert(.writable) }
        if interest != client.interest {
            do {
                try epoll.modify(fd: client.stream.fd, events: interest, tag: Tag.controlBase + UInt64(slot))
                client.interest = interest
            } catch {
                closeControl(slot)
                return
            }
        }
        control?.clients[slot] = client
    }

    private func answer(_ client: inout ControlClient, _ object: ControlObject) {
        client.output += object.line
    }

    func closeControl(_ slot: Int) {
        guard let client = control?.clients.removeValue(forKey: slot) else { return }
        try? epoll.remove(fd: client.stream.fd)
        client.stream.close()
    }

    // MARK: - Requests

    private func start(_ request: ControlRequest, for client: inout ControlClient, slot: Int, now: Instant) {
        switch request {
        case .status:
            answer(&client, statusObject(now: now))
        case .metrics:
            answer(&client, ["ok": .bool(true), "text": .string(metricsText(now: now))])
        case .users(let match):
            client.task = .listing(next: service.registry.count - 1, match: match, count: 0)
            continueListing(&client)
        case .lookup(let target):
            switch resolve(target) {
            case .success(let entry):
                answer(&client, ["ok": .bool(true), "address": .string("\(entry.address)"), "username": .string(entry.username.text)])
            case .failure(let error):
                answer(&client, error.object)
            }
        case .remove(let target):
            switch resolve(target) {
            case .success(let entry):
                let ticket = newTicket(slot: slot, uid: client.uid)
                // The outcome, immediate or after the sync, comes as an event.
                _ = service.removeRegistration(of: entry.address, ticket: ticket, now: now)
                client.task = .waiting(ticket)
                control?.queuedStorage = true
            case .failure(let error):
                answer(&client, error.object)
            }
        case .snapshot:
            let ticket = newTicket(slot: slot, uid: client.uid)
            service.requestSnapshot(ticket: ticket)
            client.task = .waiting(ticket)
            control?.queuedStorage = true
        case .reload:
            let outcome = reloadAndReport()
            if outcome.applied {
                answer(&client, ["ok": .bool(true)])
            } else {
                answer(&client, ControlError(.reloadRefused, outcome.reason ?? "refused").object)
            }
        }
    }

    private func newTicket(slot: Int, uid: UInt32) -> UInt64 {
        let ticket = control!.nextTicket
        control!.nextTicket += 1
        control!.tickets[ticket] = (slot, uid)
        return ticket
    }

    /// The registration `target` names, or why there is none.
    private func resolve(_ target: ControlTarget) -> Result<(address: IPAddress, username: Username), ControlError> {
        let registry = service.registry
        switch target {
        case .username(let name):
            if let address = registry.holder(of: name), let held = registry.username(for: address) {
                return .success((address, held))
            }
            return .failure(ControlError(.notRegistered, "no address holds the username \(name)"))
        case .address(let address):
            if let name = registry.username(for: address) { return .success((address, name)) }
            return .failure(ControlError(.notRegistered, "no username is registered for \(address)"))
        }
    }

    /// The service reported a ticket's outcome: answers the client that
    /// waits for it, if it is still there. Returns the administrator's uid.
    @discardableResult
    func finishTicket(_ ticket: UInt64, with object: ControlObject, now: Instant) -> UInt32? {
        guard let (slot, uid) = control?.tickets.removeValue(forKey: ticket) else { return nil }
        if var client = control?.clients[slot], case .waiting(ticket) = client.task {
            client.task = nil
            answer(&client, object)
            control?.clients[slot] = client
            proceed(slot, now: now)
        }
        return uid
    }

    // MARK: - Listings

    /// Whether a listing is ready for its next slice: the loop must not sleep.
    var controlHasWork: Bool {
        control?.clients.values.contains { client in
            if case .listing = client.task { return client.isFlushed }
            return false
        } ?? false
    }

    /// One slice for every listing whose previous slice has gone.
    func serveControl(now: Instant) {
        guard let slots = control?.clients.keys else { return }
        for slot in slots {
            guard var client = control?.clients[slot], case .listing = client.task, client.isFlushed else { continue }
            continueListing(&client)
            // A listing that matches nothing for a long while is working, not idle.
            client.lastProgress = now
            guard flush(&client, slot: slot, now: now) else { continue }
            control?.clients[slot] = client
            proceed(slot, now: now)
        }
    }

    /// Appends the next slice of a listing, and its end when it is done.
    ///
    /// It counts down from the last registration: Registry.remove moves the
    /// last record into the hole, so a record only ever moves to a lower
    /// index, and counting down reaches every record that exists for the
    /// whole listing (one moved from above the cursor to below it is sent
    /// twice; new ones, appended above the cursor, are not sent).
    private func continueListing(_ client: inout ControlClient) {
        guard case .listing(var next, let match, var count) = client.task else { return }
        let registry = service.registry
        next = min(next, registry.count - 1)
        var visited = 0
        while next >= 0, visited < Self.usersSlice {
            let entry = registry.entry(at: next)
            next -= 1
            visited += 1
            if let match, !match.matches(entry.username) { continue }
            client.output += #"{"address": ""#.utf8
            client.output += "\(entry.address)".utf8
            client.output += #"", "username": ""#.utf8
            client.output += entry.username.text.utf8  // the username rule needs no escaping
            client.output += "\"}\n".utf8
            count += 1
        }
        if next < 0 {
            client.task = nil
            answer(&client, ["ok": .bool(true), "count": .integer(Int64(count))])
        } else {
            client.task = .listing(next: next, match: match, count: count)
        }
    }

    /// Closes clients that have done nothing for `controlIdleTimeout`,
    /// except those waiting for chatd (a large snapshot takes its time), and
    /// takes a paused listener back into the epoll set.
    func controlTick(now: Instant) {
        if let listener = control?.listener, control?.acceptPaused == true,
            (try? epoll.modify(fd: listener.fd, events: .readable, tag: Tag.controlListener.rawValue)) != nil
        {
            control?.acceptPaused = false
        }
        guard let clients = control?.clients else { return }
        for (slot, var client) in clients where now - client.lastProgress >= Self.controlIdleTimeout {
            if case .waiting = client.task { continue }
            if client.isFlushed, client.task == nil {
                answer(&client, ControlError(.timeout, "no request within \(Self.controlIdleTimeout.components.seconds) s").object)
                client.closing = true
                control?.clients[slot] = client
                if flush(&client, slot: slot, now: now) { closeControl(slot) }
            } else {
                // It stopped reading its answer.
                closeControl(slot)
            }
        }
    }

    /// Stops serving control clients: the listener, and every connection.
    /// Each is told that chatd is stopping, after any answer it was sent: a
    /// request still unread (chatctl writes first, then reads) gets that as
    /// its answer, rather than a close it could not tell from a crash.
    func closeControl() {
        guard let control else { return }
        for (slot, var client) in control.clients {
            client.task = nil
            answer(&client, ControlError(.stopping, "chatd is stopping").object)
            // One nonblocking try: stopping does not wait for a slow reader.
            guard flush(&client, slot: slot, now: clock()) else { continue }
            closeControl(slot)
        }
        try? epoll.remove(fd: control.listener.fd)
        control.listener.close()
        self.control = nil
    }
}
