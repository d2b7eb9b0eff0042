// The registration journal's file, written by a thread of its own.
//
// fdatasync takes milliseconds to tens of milliseconds. On the event loop
// it would hold up every CONNECT behind it; here it holds up only the
// replies that wait for it (see CommitQueue). The thread runs jobs in order,
// appends-and-syncs and compactions alike, so they never race on the file,
// and reports each outcome through its eventfd to the loop, which reads them
// with `takeOutcomes()`. Only this thread touches the open file after start.
//
// The file is always a version-2 journal (Journal.swift): a new one gets its
// header, synced, before serving starts, a compaction keeps the header, and
// a version-1 journal found at start is folded into the snapshot and
// replaced by a new one first (see `recover`).

import ChatConfig
import ChatCore
import ChatSystem
import Synchronization

public final class JournalWriter: Sendable {
    enum Outcome: Sendable {
        /// A group is on disk; the file now holds `length` bytes.
        case committed(length: Int)
        /// A group could not be written; the file is back at `length` bytes.
        case failed(error: String, length: Int)
        /// The lines a snapshot covers were dropped; `length` bytes remain.
        case compacted(length: Int)
        case compactionFailed(error: String)
    }

    public let path: String
    private let thread: BackgroundThread
    private let file: FileBox
    private let outcomes = Mutex<[Outcome]>([])
    /// Bytes of the file when it was opened (for the loop's bookkeeping).
    let initialLength: Int

    /// The open file, touched only by the journal thread once serving starts.
    private final class FileBox: @unchecked Sendable {
        var file: AppendFile
        /// Bytes ending in the last line whose sync returned.
        var confirmedLength: Int
        /// A failed commit may have left bytes past `confirmedLength` (its
        /// cut failed too, or a partial write the file's length does not
        /// count): cut before the next append.
        var mustCut = false
        /// A compaction put a new file at the path and it is not open yet.
        var reopenPending = false
        init(_ file: AppendFile) {
            self.file = file
            confirmedLength = file.length
        }

        /// Opens the file a compaction left at `path`, after making its folder
        /// entry durable: appends synced into it would otherwise be lost if a
        /// crash brought the old file back.
        func reopenIfPending(_ path: String) throws {
            guard reopenPending else { return }
            try FileSystem.syncFolder(containing: path)
            file = try AppendFile(path: path)
            confirmedLength = file.length
            mustCut = false  // the compacted file holds confirmed bytes only
            reopenPending = false
        }
    }

    /// Opens the journal at `path`, which must be absent, empty or a
    /// version-2 journal (as `recover` leaves it); an empty one gets the header.
    private init(path: String) throws {
        self.path = path
        let file = try AppendFile(path: path)
        if file.length == 0 {
            // Synced now, so that every record appended later follows it on
            // disk and the file never reads as version 1 after a crash.
            try file.append(Journal.header)
            try file.sync()
        }
        initialLength = file.length
        self.file = FileBox(file)
        thread = try BackgroundThread()
    }

    /// What opening the journal at start found.
    public struct Recovery: Sendable {
        /// Changes replayed onto the snapshot.
        public var lines = 0
        /// Bytes of a torn last line that were cut off (a crash during an append).
        public var droppedBytes = 0
        /// With durability "periodic": a journal was there (left by "sync"),
        /// and it has been folded into the snapshot and removed, since
        /// periodic mode journals nothing and replay must never run over
        /// changes made after its last line.
        public var folded = false
        /// With durability "sync": the journal was version 1 (left by an
        /// older chatd); it has been folded into the snapshot and replaced
        /// by an empty version-2 journal, since records of the new format
        /// cannot be appended to it.
        public var upgradedFromVersion1 = false
    }

    /// Replays the journal at `path` onto `registry` (a torn last line is cut
    /// off the file first) and opens it for appending, a version-1 journal
    /// after upgrading it (see `Recovery.upgradedFromVersion1`); with
    /// durability "periodic" it is folded into the snapshot at
    /// `snapshotPath` instead (see `Recovery.folded`) and nil is returned.
    /// Damage other than a torn tail throws, leaving the file untouched.
    ///
    /// Chat messages in the journal newer than `history` (as loaded from the
    /// history file) are added to it; folding writes the history file too.
    public static func recover(
        at path: String, into registry: inout Registry, history: inout (messages: [ChatMessage], lastSeq: UInt64),
        durability: Durability, snapshotPath: String, historyPath: String
    ) throws -> (JournalWriter?, Recovery) {
        var recovery = Recovery()
        var version: Int?
        let bytes = try FileSystem.readFile(atPath: path)
        if let bytes {
            let replay = try Journal.replay(bytes, into: &registry)
            for message in replay.messages where message.seq > history.lastSeq {
                history.messages.append(message)
                history.lastSeq = message.seq
            }
            recovery.lines = replay.lines
            version = replay.version
            if replay.tornTail {
                recovery.droppedBytes = bytes.count - replay.validLength
                if durability == .sync { try FileSystem.truncate(atPath: path, length: replay.validLength) }
            }
        }
        guard durability == .sync else {
            if bytes != nil {
                try FileSystem.writeAtomically(
                    HistoryFile.encode(history.messages, lastSeq: history.lastSeq), toPath: historyPath)
                try saveSnapshot(registry, at: snapshotPath)
                try FileSystem.removeItem(atPath: path)
                try FileSystem.syncFolder(containing: path)
                recovery.folded = true
            }
            return (nil, recovery)
        }
        if version == 1 {
            // Snapshot first: a crash before the journal is replaced leaves
            // the version-1 file, whose lines replay onto the new snapshot
            // harmlessly (they are facts it already holds); after, the new
            // file. writeAtomically leaves one or the other, never neither.
            try saveSnapshot(registry, at: snapshotPath)
            try FileSystem.writeAtomically(Journal.header, toPath: path)
            recovery.upgradedFromVersion1 = true
        }
        return (try JournalWriter(path: path), recovery)
    }

    /// Writes `registry` as the snapshot, durably, before the journal that
    /// it now covers is removed or replaced.
    private static func saveSnapshot(_ registry: Registry, at snapshotPath: String) throws {
        try FileSystem.writeAtomically(
            Snapshot.encode(registry, savedAt: SystemClock.wallSeconds().seconds), toPath: snapshotPath)
    }

    /// Readable when outcomes wait.
    var fd: Int32 { thread.fd }

    /// Appends `lines` and syncs them.
    func commit(_ lines: [UInt8]) {
        thread.run { [self] in
            let outcome: Outcome
            do {
                try file.reopenIfPending(path)
                // Bytes of a failed commit, replayed later, would override confirmed lines.
                if file.mustCut {
                    try file.file.truncate(to: file.confirmedLength)
                    file.mustCut = false
                }
                try file.file.append(lines)
                try file.file.sync()
                file.confirmedLength = file.file.length
                outcome = .committed(length: file.confirmedLength)
            } catch {
                // Lines that were written but not synced are unconfirmed: cut
                // them (if this fails too, the next commit tries again first).
                file.mustCut = file.reopenPending || (try? file.file.truncate(to: file.confirmedLength)) == nil
                outcome = .failed(error: "\(error)", length: file.confirmedLength)
            }
            outcomes.withLock { $0.append(outcome) }
        }
    }

    /// Drops the first `count` bytes but the header, which a durable snapshot
    /// now covers: the header and the rest are written to a new file that
    /// replaces the journal atomically.
    func compact(droppingFirst count: Int) {
        thread.run { [self] in
            let outcome: Outcome
            do {
                let all = try FileSystem.readFile(atPath: path) ?? []
                let end = min(file.confirmedLength, all.count)
                let kept = Journal.header + all[min(count, end)..<end]
                do {
                    try FileSystem.writeAtomically(kept, toPath: path)
                } catch {
                    // Failed after its rename (syncing the folder)? Then the
                    // path holds the compacted file all the same, and appends
                    // must go there.
                    guard file.file.isReplaced, (try? FileSystem.readFile(atPath: path)) == kept else { throw error }
                }
                file.confirmedLength = kept.count
                file.reopenPending = true
                try? file.reopenIfPending(path)  // or at the next commit
                outcome = .compacted(length: kept.count)
            } catch {
                outcome = .compactionFailed(error: "\(error)")
            }
            outcomes.withLock { $0.append(outcome) }
        }
    }

    /// Outcomes since the last call, in order.
    func takeOutcomes() throws -> [Outcome] {
        _ = try thread.acknowledge()
        return outcomes.withLock { taken in
            defer { taken.removeAll() }
            return taken
        }
    }

    /// Blocks until a job has finished (for the final commits at exit).
    func waitForOutcome() throws {
        try thread.waitForCompletion()
    }
}
