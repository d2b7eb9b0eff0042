// chatd's storage: the service's storage work carried out on two helper
// threads (snapshots on one, the journal's syncs and compactions on the
// other), their outcomes handed back, and the settling at exit. Which work
// may run when, and what an outcome means, is the service's to decide.

import ChatConfig
import ChatCore
import ChatSystem
import Logging
import Synchronization

extension Server {
    /// How a snapshot write ended, as the writer thread reports it.
    struct WriteOutcome: Sendable {
        var report: ChatService.SnapshotReport
        var error: String?
    }

    /// Where the writer thread leaves its outcome for the loop.
    final class OutcomeBox: Sendable {
        let value = Mutex<WriteOutcome?>(nil)
    }

    /// Hands one piece of storage work to its thread.
    func start(_ work: ChatService.StorageWork) {
        switch work {
        case .commit(let lines):
            journal?.commit(lines)
        case .compact(let count):
            journal?.compact(droppingFirst: count)
        case .writeSnapshot(let job):
            let paths = (snapshot: settings.snapshotPath, history: settings.historyPath)
            let outcome = writeOutcome
            snapshotWriter.run {
                let result = writeSnapshot(job, to: paths, savedAt: SystemClock.wallSeconds().seconds)
                outcome.value.withLock { $0 = result }
            }
        }
    }

    func handleSnapshotOutcome() throws {
        _ = try snapshotWriter.acknowledge()
        guard let outcome = writeOutcome.value.withLock({ $0.take() }) else { return }
        if let error = outcome.error {
            service.snapshotFailed(error: error)
        } else {
            service.snapshotWritten(outcome.report)
        }
    }

    func handleJournalOutcomes() throws {
        guard let journal else { return }
        for outcome in try journal.takeOutcomes() {
            switch outcome {
            case .committed(let length): service.committed(journalLength: length, now: clock())
            case .failed(let error, let length): service.commitFailed(error: error, journalLength: length)
            case .compacted(let length): service.compacted(journalLength: length)
            case .compactionFailed(let error): service.compactionFailed(error: error)
            }
        }
    }

    /// Leaves serving: changes already handled get their sync and their
    /// answer, work in flight ends, then the final snapshot is written and
    /// the journal lines it covers dropped. Returns whether it was written.
    func stop() throws -> Bool {
        Systemd.notify("STOPPING=1\nSTATUS=stopping: writing the final snapshot")
        let counters = service.counters
        logger.info("stopping", metadata: [
            "message.id": MessageID.stopping, "users": "\(service.registry.count)",
            "datagrams.received": "\(counters.received)", "datagrams.dropped": "\(counters.dropped)",
            "datagrams.malformed": "\(counters.malformed)", "datagrams.sent": "\(statistics.sent)",
            "send.errors": "\(statistics.sendErrors)",
            "datagrams.rate_limited": "\(counters.rateLimited)",
            "datagrams.unanswered_amplification": "\(counters.amplificationDropped)",
        ])
        service.stop()
        try settle()
        service.writeFinalSnapshot()
        try settle()
        // Answers settling released (removals synced) have been queued; the
        // clients get what their sockets take now, and are closed.
        closeControl()
        return service.snapshotError == nil
    }

    /// Blocks until the service has nothing in flight and nothing queued.
    private func settle() throws {
        while true {
            carryOut(now: clock())
            if service.awaitsJournal {
                try journal?.waitForOutcome()
                try handleJournalOutcomes()
            } else if service.awaitsSnapshot {
                try snapshotWriter.waitForCompletion()
                try handleSnapshotOutcome()
            } else {
                return  // settled: carryOut left nothing queued
            }
        }
    }
}

/// Encodes and writes the history file and then the snapshot, each
/// atomically (HistoryFile.swift says why in that order); runs on the writer
/// thread, so it touches no server state.
func writeSnapshot(
    _ job: ChatService.SnapshotJob, to paths: (snapshot: String, history: String), savedAt: Int64
) -> Server.WriteOutcome {
    let start = SystemClock.monotonicNow()
    let bytes = Snapshot.encode(job.records, savedAt: savedAt, replacing: job.replacing)
    var error: String?
    do {
        try FileSystem.writeAtomically(HistoryFile.encode(job.messages, lastSeq: job.lastSeq), toPath: paths.history)
        try FileSystem.writeAtomically(bytes, toPath: paths.snapshot)
    } catch let failure {
        error = "\(failure)"
    }
    let report = ChatService.SnapshotReport(
        savedAt: savedAt, bytes: bytes.count, duration: SystemClock.monotonicNow() - start)
    return Server.WriteOutcome(report: report, error: error)
}
