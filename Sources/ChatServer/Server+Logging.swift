// chatd's log: the service's events as log lines, and the warnings a flood
// could repeat summarised through a Throttle (at most one line per kind per
// 10 s, carrying the count). What happened is the service's to say; how it
// reads in the journal is decided here.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

extension Server {
    /// Repeatable warnings, summarised by the throttle: the first at once,
    /// then at most one line per kind per 10 s with a count.
    enum Warning: Hashable, Sendable {
        case malformed, receiveFailed, sendFailed, snapshotFailed, registryFull, journalFailed, rateLimited

        var message: Logger.Message {
            switch self {
            case .malformed: "malformed datagrams received"
            case .receiveFailed: "receive failed"
            case .sendFailed: "datagrams not sent"
            case .snapshotFailed: "snapshot failed, keeping the previous one; will retry"
            case .registryFull: "registrations refused: registry full"
            case .journalFailed: "registrations and messages not saved: cannot write the journal; answered UNAVAILABLE"
            case .rateLimited: "datagrams dropped: over the per-address rate limit"
            }
        }
    }

    /// Logs the events the service has reported since the last call.
    func logEvents(now: Instant) {
        while let event = service.pollEvent() { log(event, now: now) }
    }

    private func log(_ event: ChatService.Event, now: Instant) {
        switch event {
        case .registered(let name, let client, let id):
            logger.info("user registered", metadata: [
                "client.ip": "\(client.address)", "request.id": "\(id)", "username": "\(name)",
                "message.id": MessageID.registered,
            ])
        case .renamed(let previous, let name, let client, let id):
            logger.info("user renamed", metadata: [
                "client.ip": "\(client.address)", "request.id": "\(id)", "username": "\(name)",
                "username.previous": "\(previous)", "message.id": MessageID.renamed,
            ])
        case .answered(let answer, let client, let id):
            var metadata: Logger.Metadata = [
                "client.ip": "\(client.address)", "request.id": "\(id)", "result": "\(answer.summary)",
            ]
            switch answer {
            case .connected(let name), .reintroduced(_, let name), .taken(let name): metadata["username"] = "\(name)"
            default: break
            }
            logger.debug("request answered", metadata: metadata)
        case .malformed(let client, let id):
            warn(.malformed, now: now, ["client.ip": "\(client.address)", "request.id": "\(id)"])
        case .rateLimited(let client):
            warn(.rateLimited, now: now, ["client.ip": "\(client.address)"])
        case .registryFull(let name, let client, let id):
            // Spoofed sources could send these without end: summarised too.
            warn(.registryFull, now: now, [
                "client.ip": "\(client.address)", "request.id": "\(id)", "username": "\(name)",
                "registry.max_users": "\(service.configuration.maxUsers)",
            ])
        case .memberJoined(let name, let client):
            logger.info("member joined", metadata: [
                "message.id": MessageID.memberJoined, "username": "\(name)", "client.ip": "\(client.address)",
                "client.port": "\(client.port)", "members": "\(service.memberCount)",
            ])
            updateStatus()
        case .memberLeft(let name, let client, let reason):
            var metadata: Logger.Metadata = [
                "message.id": MessageID.memberLeft, "client.ip": "\(client.address)",
                "client.port": "\(client.port)", "reason": "\(reason.rawValue)", "members": "\(service.memberCount)",
            ]
            if let name { metadata["username"] = "\(name)" }
            logger.info("member left", metadata: metadata)
            updateStatus()
        case .messageAccepted(let seq, let name, let client, let bytes):
            // The text is the members' business, never the log's.
            logger.debug("message accepted", metadata: [
                "message.id": MessageID.messageAccepted, "seq": "\(seq)", "username": "\(name)",
                "client.ip": "\(client.address)", "client.port": "\(client.port)", "bytes": "\(bytes)",
            ])
        case .journalFailed(let error):
            warn(.journalFailed, now: now, ["journal.path": "\(settings.journalPath)", "error": "\(error)"])
            updateStatus()
        case .snapshotWritten(let report, let users):
            logger.info("snapshot written", metadata: [
                "message.id": MessageID.snapshotWritten, "snapshot.path": "\(settings.snapshotPath)",
                "users": "\(users)", "bytes": "\(report.bytes)",
                "snapshot.write_ms": "\(report.duration.nanoseconds / 1_000_000)",
            ])
            updateStatus()
        case .snapshotFailed(let error):
            warn(.snapshotFailed, now: now, ["snapshot.path": "\(settings.snapshotPath)", "error": "\(error)"])
            updateStatus()
        case .compactionFailed(let error):
            // The journal only keeps lines the snapshot covers too: harmless, retried next snapshot.
            logger.warning("journal not compacted; it will be at the next snapshot", metadata: [
                "journal.path": "\(settings.journalPath)", "error": "\(error)",
            ])
        case .removed, .removalFailed, .snapshotRequestFinished: break
        }
    }

    /// Logs a repeatable warning through the throttle: at once the first
    /// time, then as one summary line per kind per window.
    func warn(_ kind: Warning, now: Instant? = nil, _ metadata: @autoclosure () -> Logger.Metadata) {
        guard let count = throttle.record(kind, now: now ?? clock()) else { return }
        report(kind, count: count, metadata())
    }

    func report(_ kind: Warning, count: Int, _ metadata: Logger.Metadata = [:]) {
        var metadata = metadata
        metadata["count"] = "\(count)"
        metadata["summary.window_s"] = "\(throttle.window.components.seconds)"
        if kind == .snapshotFailed {
            metadata["message.id"] = MessageID.snapshotFailed
            logger.error(kind.message, metadata: metadata)
        } else {
            logger.warning(kind.message, metadata: metadata)
        }
    }
}

extension RequestHandler.Event {
    /// A short word for logs.
    var summary: String {
        switch self {
        case .dropped: "dropped"
        case .malformed: "malformed"
        case .unsupportedVersion: "unsupported_version"
        case .connected: "connected"
        case .notFound: "client_not_found"
        case .registered: "registered"
        case .renamed: "renamed"
        case .reintroduced: "reintroduced"
        case .invalidUsername: "invalid_username"
        case .taken: "taken"
        case .full: "server_full"
        }
    }
}
