// ChatService against a simulated disk, with storage outcomes in random
// order and random failures: after every step, what a crash would bring
// back (the snapshot on disk, then the journal on disk replayed onto it)
// must hold exactly the registrations whose change was confirmed. That is
// the whole point of the crash-safety rules in ChatService's theory comment;
// breaking any one of them (compacting more than a snapshot covers, a
// snapshot while a compaction is pending, a snapshot that keeps a change
// whose sync then fails) makes this fail within a few seeds.

import ChatCore
import Testing

/// The disk as the shell would leave it, with work done when the test says.
private struct Disk {
    var journal: [UInt8] = Journal.header
    var snapshot: [UInt8]?
    var pendingCommit: [UInt8]?
    var pendingSnapshot: ChatService.SnapshotJob?
    var pendingCompaction: Int?

    /// What chatd would load after a crash now.
    func recover() throws -> Registry {
        var registry = try snapshot.map { try Snapshot.load($0, maxUsers: 1000) } ?? Registry(maxUsers: 1000)
        _ = try Journal.replay(journal, into: &registry)
        return registry
    }
}

private func names(_ registry: Registry) -> [IPAddress: String] {
    var all: [IPAddress: String] = [:]
    for entry in registry.entries { all[entry.address] = entry.username.text }
    return all
}

@Suite struct ChatServiceCrashTests {
    @Test(arguments: 0..<60)
    func aCrashAtAnyStepBringsBackExactlyTheConfirmedRegistrations(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var now = Instant(nanoseconds: 0)
        var service = ChatService(
            configuration: .init(
                maxUsers: 12, ratePerIP: 0, burstPerIP: 1, journaling: true, snapshotInterval: .seconds(5)),
            registry: Registry(maxUsers: 12), journalLength: Journal.header.count, now: now, seed: seed)
        var disk = Disk()
        // What the clients were told: the confirmed registrations, applied as facts.
        var confirmed = Registry(maxUsers: 1000)
        var reply: [UInt8] = []

        for step in 0..<400 {
            switch random.next() % 10 {
            case 0...4:
                let source = Endpoint(.v4(0x0a00_0000 + UInt32(random.next() % 10)), port: 1)
                let text =
                    random.next() % 4 == 0
                    ? "CHAT/1 \(step + 10) CONNECT" : "CHAT/1 \(step + 10) INTRODUCE n\(random.next() % 14)"
                _ = Array(text.utf8).withUnsafeBytes {
                    service.handle(datagram: $0, from: source, socket: 0, now: now, reply: &reply)
                }
            case 5:
                now = now + .seconds(Int64(random.next() % 4))
                service.handleTimeout(now: now)
            case 6:
                guard let lines = disk.pendingCommit else { break }
                disk.pendingCommit = nil
                if random.next() % 4 == 0 {
                    service.commitFailed(error: "EIO", journalLength: disk.journal.count)
                } else {
                    disk.journal += lines
                    service.committed(journalLength: disk.journal.count)
                }
            case 7:
                guard let job = disk.pendingSnapshot else { break }
                disk.pendingSnapshot = nil
                if random.next() % 4 == 0 {
                    service.snapshotFailed(error: "ENOSPC")
                } else {
                    disk.snapshot = Snapshot.encode(job.records, savedAt: 0, replacing: job.replacing)
                    service.snapshotWritten(.init(savedAt: 0, bytes: 0, duration: .zero))
                }
            default:
                guard let count = disk.pendingCompaction else { break }
                disk.pendingCompaction = nil
                if random.next() % 4 == 0 {
                    service.compactionFailed(error: "EIO")
                } else {
                    disk.journal = Journal.header + disk.journal[min(count, disk.journal.count)...]
                    service.compacted(journalLength: disk.journal.count)
                }
            }
            while let work = service.pollStorageWork() {
                switch work {
                case .commit(let lines):
                    #expect(disk.pendingCommit == nil, "one group in flight at a time")
                    disk.pendingCommit = lines
                case .writeSnapshot(let job):
                    #expect(disk.pendingSnapshot == nil && disk.pendingCompaction == nil)
                    disk.pendingSnapshot = job
                case .compact(let count):
                    #expect(disk.pendingCompaction == nil && count <= disk.journal.count)
                    disk.pendingCompaction = count
                }
            }
            while let event = service.pollEvent() {
                switch event {
                case .registered(let name, let client, _), .renamed(_, let name, let client, _):
                    confirmed.restore(name, at: client.address)
                default: break
                }
            }
            while service.pollTransmit() != nil {}
            let recovered = try disk.recover()
            try #require(
                names(recovered) == names(confirmed),
                "seed \(seed), step \(step): a crash now would bring back other registrations than were confirmed")
        }
    }
}
