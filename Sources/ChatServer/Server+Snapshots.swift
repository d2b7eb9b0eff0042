// chatd's snapshots: written by a background thread from a copy-on-write
// copy of the records; only the final one, at exit, is written on the loop.

import ChatConfig
import ChatCore
import ChatSystem
import Logging
import Synchronization

extension Server {
    /// How a snapshot write ended, as the writer thread reports it.
    struct WriteOutcome: Sendable {
        var path: String
        var savedAt: Int64
        var users: Int
        var bytes: Int
        var duration: Duration
        var error: String?
        /// Journal bytes this snapshot covers, to drop once it is durable.
        var journalLength = 0
    }

    /// Where the writer thread leaves its outcome for the loop.
    final class OutcomeBox: Sendable {
        let value = Mutex<WriteOutcome?>(nil)
    }

    /// Hands a copy of the records to the writer thread. The registry counts
    /// as saved from now, unless changes were pending (they are written as
    /// they stand on disk); a failure marks it dirty again.
    func startSnapshot() {
        let records = registry.records
        // Pending changes are written as they stand on disk: one whose sync
        // fails is undone in memory and must not live on in the file.
        let confirmed = commits.confirmedNames
        let path = settings.snapshotPath
        let savedAt = SystemClock.wallSeconds().seconds
        let outcome = writeOutcome
        let covered = journalLength
        writing = true
        // Pending changes left out now must go into a later snapshot.
        dirty = !confirmed.isEmpty
        snapshotWriter.run {
            var result = writeSnapshot(records, replacing: confirmed, to: path, savedAt: savedAt)
            result.journalLength = covered
            outcome.value.withLock { $0 = result }
        }
    }

    /// Collects the writer thread's outcome.
    func finishSnapshot() {
        guard let outcome = writeOutcome.value.withLock({ $0.take() }) else { return }
        writing = false
        guard finish(outcome) else {
            dirty = true
            return
        }
        // The snapshot holds every change in those journal bytes: drop them.
        if let journal, outcome.journalLength > 0 {
            journal.compact(droppingFirst: outcome.journalLength)
            compacting = true
        }
    }

    /// Logs a write's outcome and keeps STATUS= current; on failure the old
    /// file stays and the next interval tries again.
    @discardableResult
    func finish(_ outcome: WriteOutcome) -> Bool {
        if let error = outcome.error {
            statusNote = "snapshot failed: \(error)"
            warn(.snapshotFailed, [
                "snapshot.path": "\(outcome.path)", "error": "\(error)",
            ])
            updateStatus()
            return false
        }
        lastSnapshot = outcome.savedAt
        if statusNote?.hasPrefix("snapshot failed") == true { statusNote = nil }
        logger.info("snapshot written", metadata: [
            "message.id": MessageID.snapshotWritten, "snapshot.path": "\(outcome.path)",
            "users": "\(outcome.users)", "bytes": "\(outcome.bytes)",
            "snapshot.write_ms": "\(outcome.duration.nanoseconds / 1_000_000)",
        ])
        updateStatus()
        return true
    }
}


/// Encodes and writes `records` atomically; runs on the writer thread (and
/// on the loop for the final snapshot), so it touches no server state.
func writeSnapshot(
    _ records: Registry.Records, replacing confirmed: [IPAddress: Username?] = [:], to path: String, savedAt: Int64
) -> Server.WriteOutcome {
    let start = SystemClock.monotonicNow()
    let bytes = Snapshot.encode(records, savedAt: savedAt, replacing: confirmed)
    let users = records.count - confirmed.values.count { $0 == nil }
    var outcome = Server.WriteOutcome(
        path: path, savedAt: savedAt, users: users, bytes: bytes.count, duration: .zero, error: nil)
    do {
        try FileSystem.writeAtomically(bytes, toPath: path)
    } catch {
        outcome.error = "\(error)"
    }
    outcome.duration = SystemClock.monotonicNow() - start
    return outcome
}
