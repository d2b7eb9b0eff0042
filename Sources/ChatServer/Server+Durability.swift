// chatd's durable registrations: holding replies until their journal line
// is on disk, and answering again when a sync fails (see CommitQueue).

import ChatConfig
import ChatCore
import ChatSystem
import Logging

extension Server {
    /// A reply that waits for a journal commit, with what it takes to answer again.
    public struct HeldReply: Sendable {
        var request: [UInt8]
        var source: Endpoint
        var socket: Int
        var reply: [UInt8]
        /// It reports a change (answered UNAVAILABLE if the change is undone).
        var isChange: Bool
    }

    /// With durability "sync", keeps back a reply that reports a change or
    /// reflects one not yet on disk (see CommitQueue); `reply` holds its bytes.
    func holdUntilDurable(
        _ result: RequestHandler.Result, request: UnsafeRawBufferPointer, from source: Endpoint, socket: Int
    ) -> Bool {
        guard settings.durability == .sync, journal != nil else { return false }
        let change: (name: Username, previous: Username?)? =
            switch result.event {
            case .registered(let name): (name, nil)
            case .renamed(let previous, let name): (name, previous)
            case .reintroduced(let previous, let name) where previous.text != name.text: (name, previous)
            default: nil
            }
        if let change {
            let held = HeldReply(request: Array(request), source: source, socket: socket, reply: reply, isChange: true)
            commits.record(address: source.address, name: change.name, previous: change.previous, reply: held)
            return true
        }
        guard commits.isPending(source.address) else { return false }
        commits.hold(HeldReply(request: Array(request), source: source, socket: socket, reply: reply, isChange: false))
        return true
    }

    /// Hands the queued changes to the journal thread, unless a commit is in flight.
    func startCommit() {
        guard let journal, let lines = commits.startCommit() else { return }
        if lines.isEmpty {
            // Only replies waiting behind a commit that has completed since.
            deliver(commits.commitSucceeded())
            return
        }
        journal.commit(lines)
    }

    func handleJournalOutcomes() throws {
        guard let journal else { return }
        for outcome in try journal.takeOutcomes() {
            switch outcome {
            case .committed(let length):
                journalLength = length
                if statusNote?.hasPrefix("registrations unavailable") == true { statusNote = nil }
                deliver(commits.commitSucceeded())
            case .failed(let error, let length):
                journalLength = length
                statusNote = "registrations unavailable: \(error)"
                warn(.journalFailed, [
                    "journal.path": "\(journal.path)", "error": "\(error)",
                ])
                let held = commits.commitFailed(registry: &registry)
                for reply in held { answerAgain(reply) }
                updateStatus()
            case .compacted(let length):
                journalLength = length
                compacting = false
            case .compactionFailed(let error):
                compacting = false
                // The journal only keeps lines the snapshot covers too: harmless, retried next snapshot.
                logger.warning("journal not compacted; it will be at the next snapshot", metadata: [
                    "journal.path": "\(journal.path)", "error": "\(error)",
                ])
            }
        }
    }

    /// Sends replies whose changes are on disk.
    func deliver(_ replies: [HeldReply]) {
        for held in replies { sendOne(held.reply, on: held.socket, to: held.source) }
    }

    /// After a failed commit: a change is refused with UNAVAILABLE; anything
    /// else is answered afresh from the registry as it now is.
    func answerAgain(_ held: HeldReply) {
        if held.isChange {
            guard case .request(let request) = RequestParse(held.request) else { return }
            sendOne(Response.error(id: request.id, reason: .unavailable).bytes, on: held.socket, to: held.source)
            return
        }
        let result = RequestHandler.handle(held.request, from: held.source.address, registry: &registry)
        record(result, from: held.source)
        guard let response = result.reply else { return }
        reply.removeAll(keepingCapacity: true)
        response.write(into: &reply)
        let again = held.request
        if again.withUnsafeBytes({ holdUntilDurable(result, request: $0, from: held.source, socket: held.socket) }) { return }
        sendOne(reply, on: held.socket, to: held.source)
    }

    func sendOne(_ bytes: [UInt8], on socket: Int, to destination: Endpoint) {
        do {
            if case .processed = try sockets[socket].send(bytes, to: destination) {
                statistics.answered += 1
                return
            }
            statistics.sendErrors += 1
            warn(.sendFailed, ["replies": "1", "reason": "send buffer full"])
        } catch {
            statistics.sendErrors += 1
            warn(.sendFailed, ["replies": "1", "error": "\(error)"])
        }
    }
}
