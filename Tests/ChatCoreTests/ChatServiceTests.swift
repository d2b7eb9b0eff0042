// ChatService on virtual time: every decision the server makes, with the
// shell played by the test (it answers storage work with outcomes of its
// choosing, in the order it chooses).

import ChatCore
import Testing

private let alice = Endpoint(IPAddress("127.0.0.2")!, port: 4000)
private let bob = Endpoint(IPAddress("127.0.0.3")!, port: 4001)
private let start = Instant(nanoseconds: 1_000_000_000)
/// Journal lengths below count from the end of the header.
private let header = Journal.header.count

private func name(_ text: String) -> Username { Username(text)! }

/// A service and the shell's side of it, recording what comes out.
private struct Harness {
    var service: ChatService
    var now = start

    init(journaling: Bool = true, maxUsers: Int = 100, rate: Double = 0, everyRequest: Bool = false) {
        service = ChatService(
            configuration: .init(
                maxUsers: maxUsers, ratePerIP: rate, burstPerIP: 4, journaling: journaling,
                snapshotInterval: .seconds(30), reportsEveryRequest: everyRequest),
            registry: Registry(maxUsers: maxUsers), journalLength: journaling ? header : 0, now: start, seed: 7)
    }

    /// Sends `text` from `source`; the reply sent at once, or nil.
    mutating func send(_ text: String, from source: Endpoint = alice, socket: Int = 0) -> String? {
        var reply: [UInt8] = []
        let answered = Array(text.utf8).withUnsafeBytes {
            service.handle(datagram: $0, from: source, socket: socket, now: now, reply: &reply)
        }
        return answered ? String(decoding: reply, as: UTF8.self) : nil
    }

    mutating func work() -> [ChatService.StorageWork] {
        var all: [ChatService.StorageWork] = []
        while let work = service.pollStorageWork() { all.append(work) }
        return all
    }

    mutating func transmits() -> [ChatService.Transmit] {
        var all: [ChatService.Transmit] = []
        while let transmit = service.pollTransmit() { all.append(transmit) }
        return all
    }

    mutating func transmitted() -> [String] { transmits().map { String(decoding: $0.bytes, as: UTF8.self) } }

    mutating func events() -> [ChatService.Event] {
        var all: [ChatService.Event] = []
        while let event = service.pollEvent() { all.append(event) }
        return all
    }

    /// alice registers and her journal line is synced: the journal holds 60 bytes past its header.
    mutating func registerAlice() {
        _ = send("CHAT/1 20 INTRODUCE alice")
        _ = work()
        service.committed(journalLength: header + 60, now: .zero)
        _ = transmits()
        _ = events()
    }

    // Read through these, so that a failed expectation does not print the whole service.
    var isSettled: Bool { service.isSettled }
    var awaitsJournal: Bool { service.awaitsJournal }

    mutating func advance(_ duration: Duration) {
        now = now + duration
        service.handleTimeout(now: now)
    }
}

private func lines(_ work: ChatService.StorageWork) -> String? {
    guard case .commit(let bytes) = work else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

private func snapshotJob(_ work: [ChatService.StorageWork]) -> ChatService.SnapshotJob? {
    for item in work { if case .writeSnapshot(let job) = item { return job } }
    return nil
}

private let report = ChatService.SnapshotReport(savedAt: 1_700_000_000, bytes: 100, duration: .milliseconds(3))

@Suite struct ChatServiceTests {
    // MARK: Answers

    @Test func connectIsAnsweredAtOnceAndChangesNothing() {
        var shell = Harness()
        #expect(shell.send("CHAT/1 10 CONNECT") == "CHAT/1 10 ERROR CLIENT_NOT_FOUND")
        #expect(shell.work().isEmpty)
        #expect(shell.events().isEmpty)
        #expect(shell.service.counters.received == 1)
    }

    @Test func notChatIsDroppedAndMalformedIsReported() {
        var shell = Harness()
        #expect(shell.send("HELLO") == nil)
        #expect(shell.send("CHAT/1 12 HELLO") == "CHAT/1 12 ERROR MALFORMED")
        #expect(shell.service.counters.dropped == 1)
        #expect(shell.service.counters.malformed == 1)
        #expect(shell.events() == [.malformed(client: alice, requestID: 12)])
    }

    @Test func aReplyOverThreeTimesItsRequestIsNotSent() {
        var shell = Harness(journaling: false)
        let long = String(repeating: "a", count: 32)
        _ = shell.send("CHAT/1 11 INTRODUCE \(long)")
        // 16 + 1 + 32 bytes of reply to a 16-byte request.
        #expect(shell.send("CHAT/1 1 CONNECT") == nil)
        #expect(shell.service.counters.amplificationDropped == 1)
        #expect(shell.send("CHAT/1 12 CONNECT") == "CHAT/1 12 SUCCESS \(long)")
    }

    @Test func eachAddressHasItsOwnTokenBucket() {
        var shell = Harness(rate: 1)
        for _ in 0..<4 { #expect(shell.send("CHAT/1 10 CONNECT") != nil) }
        #expect(shell.send("CHAT/1 10 CONNECT") == nil)
        #expect(shell.send("CHAT/1 10 CONNECT", from: bob) != nil)
        #expect(shell.service.counters.rateLimited == 1)
        #expect(shell.events() == [.rateLimited(client: alice)])
        shell.now = shell.now + .seconds(1)
        #expect(shell.send("CHAT/1 10 CONNECT") != nil, "a token per second")
    }

    @Test func everyRequestIsReportedOnlyWhenAskedFor() {
        var quiet = Harness()
        _ = quiet.send("CHAT/1 10 CONNECT")
        #expect(quiet.events().isEmpty)
        var chatty = Harness(everyRequest: true)
        _ = chatty.send("CHAT/1 10 CONNECT")
        #expect(chatty.events() == [.answered(.notFound, client: alice, requestID: 10)])
    }

    // MARK: Durability "sync"

    @Test func aRegistrationIsAnsweredAndReportedOnlyOnceOnDisk() {
        var shell = Harness()
        #expect(shell.send("CHAT/1 20 INTRODUCE alice") == nil, "held for the sync")
        #expect(shell.events().isEmpty, "not true yet")
        #expect(shell.service.registry.username(for: alice.address)?.text == "alice", "applied at once")
        let work = shell.work()
        #expect(work.count == 1)
        #expect(lines(work[0]) == String(decoding: Journal.line(.registration(alice.address, name("alice"))), as: UTF8.self))
        #expect(shell.awaitsJournal)
        shell.service.committed(journalLength: header + 60, now: .zero)
        #expect(shell.transmitted() == ["CHAT/1 20 SUCCESS alice"])
        #expect(shell.events() == [.registered(name("alice"), client: alice, requestID: 20)])
        #expect(!shell.awaitsJournal)
    }

    @Test func repliesToAnAddressWithAChangeInFlightWaitForIt() {
        var shell = Harness()
        _ = shell.send("CHAT/1 20 INTRODUCE alice")
        #expect(shell.send("CHAT/1 21 CONNECT") == nil)
        #expect(shell.send("CHAT/1 22 CONNECT", from: bob) == "CHAT/1 22 ERROR CLIENT_NOT_FOUND", "others are not held")
        _ = shell.work()
        shell.service.committed(journalLength: header + 60, now: .zero)
        #expect(shell.transmitted() == ["CHAT/1 20 SUCCESS alice", "CHAT/1 21 SUCCESS alice"])
    }

    @Test func changesDuringASyncShareTheNextGroup() {
        var shell = Harness()
        _ = shell.send("CHAT/1 20 INTRODUCE alice")
        #expect(shell.work().count == 1)
        _ = shell.send("CHAT/1 21 INTRODUCE bob", from: bob)
        _ = shell.send("CHAT/1 22 INTRODUCE alicia")
        #expect(shell.work().isEmpty, "one group in flight at a time")
        shell.service.committed(journalLength: header + 60, now: .zero)
        #expect(shell.transmitted() == ["CHAT/1 20 SUCCESS alice"])
        let next = shell.work()
        #expect(next.count == 1)
        #expect(lines(next[0])?.split(separator: "\n").count == 2)
        shell.service.committed(journalLength: header + 180, now: .zero)
        #expect(shell.transmitted() == ["CHAT/1 21 SUCCESS bob", "CHAT/1 22 SUCCESS alicia"])
        #expect(shell.events() == [
            .registered(name("alice"), client: alice, requestID: 20),
            .registered(name("bob"), client: bob, requestID: 21),
            .renamed(from: name("alice"), to: name("alicia"), client: alice, requestID: 22),
        ])
    }

    @Test func aFailedSyncUndoesEveryPendingChangeAndNeverRunsARequestAgain() {
        var shell = Harness()
        _ = shell.send("CHAT/1 20 INTRODUCE alice")
        _ = shell.work()
        _ = shell.send("CHAT/1 21 CONNECT")  // held: its SUCCESS reflects the pending change
        _ = shell.send("CHAT/1 22 INTRODUCE alice")  // held: decided on the pending change
        _ = shell.send("CHAT/1 23 FROB")  // held: MALFORMED whatever happens
        _ = shell.send("CHAT/1 24 INTRODUCE -bob")  // held: off the rule whatever happens
        _ = shell.send("CHAT/1 25 INTRODUCE bob", from: bob)  // queued behind the group in flight
        _ = shell.events()
        shell.service.commitFailed(error: "No space left on device", journalLength: header)
        #expect(shell.transmitted() == [
            "CHAT/1 20 ERROR UNAVAILABLE", "CHAT/1 21 ERROR CLIENT_NOT_FOUND", "CHAT/1 22 ERROR UNAVAILABLE",
            "CHAT/1 23 ERROR MALFORMED", "CHAT/1 24 ERROR INVALID_USERNAME SYNTAX", "CHAT/1 25 ERROR UNAVAILABLE",
        ])
        #expect(shell.service.registry.isEmpty, "no name that was not on disk")
        #expect(shell.events() == [.journalFailed(error: "No space left on device")])
        #expect(shell.service.journalError == "No space left on device")
        #expect(shell.work().isEmpty, "nothing left to write")
        #expect(shell.isSettled)
        // The next sync that works clears the error.
        _ = shell.send("CHAT/1 26 INTRODUCE alice")
        _ = shell.work()
        shell.service.committed(journalLength: header + 60, now: .zero)
        #expect(shell.service.journalError == nil)
    }

    @Test func heldRepliesGoBackToTheSocketTheyCameIn() {
        var shell = Harness()
        _ = shell.send("CHAT/1 20 INTRODUCE alice", socket: 1)
        _ = shell.work()
        shell.service.committed(journalLength: header + 60, now: .zero)
        #expect(shell.transmits().map(\.socket) == [1])
    }

    // MARK: Durability "periodic"

    @Test func withoutAJournalChangesAreAnsweredAndReportedAtOnce() {
        var shell = Harness(journaling: false)
        #expect(shell.send("CHAT/1 20 INTRODUCE alice") == "CHAT/1 20 SUCCESS alice")
        #expect(shell.events() == [.registered(name("alice"), client: alice, requestID: 20)])
        #expect(shell.work().isEmpty)
        shell.advance(.seconds(30))
        guard let job = snapshotJob(shell.work()) else {
            Issue.record("no snapshot at the interval")
            return
        }
        #expect(job.users == 1)
        shell.service.snapshotWritten(report)
        #expect(shell.work().isEmpty, "no journal to compact")
    }

    // MARK: Snapshots, the journal and compaction

    @Test func snapshotsAreTakenAtTheIntervalOnlyWhenSomethingChanged() {
        var shell = Harness()
        #expect(shell.service.nextTimeout() == start + .seconds(30))
        shell.advance(.seconds(30))
        #expect(shell.work().isEmpty, "nothing changed")
        #expect(shell.service.nextTimeout() == start + .seconds(60))
        shell.registerAlice()
        shell.advance(.seconds(29))
        #expect(shell.work().isEmpty, "not yet")
        shell.advance(.seconds(1))
        #expect(snapshotJob(shell.work())?.users == 1)
    }

    @Test func aWrittenSnapshotCompactsExactlyTheJournalItCovers() {
        var shell = Harness()
        shell.registerAlice()
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work()) != nil)
        // A change synced while the snapshot is written is not covered by it.
        _ = shell.send("CHAT/1 21 INTRODUCE bob", from: bob)
        _ = shell.work()
        shell.service.committed(journalLength: header + 120, now: .zero)
        shell.service.snapshotWritten(report)
        #expect(shell.service.lastSnapshot == report.savedAt)
        let work = shell.work()
        guard work.count == 1, case .compact(let count) = work[0] else {
            Issue.record("expected one compaction, got \(work)")
            return
        }
        #expect(count == header + 60)
        #expect(shell.events().contains(.snapshotWritten(report, users: 1)))
    }

    @Test func noSnapshotStartsWhileACompactionIsPending() {
        var shell = Harness()
        shell.registerAlice()
        shell.advance(.seconds(30))
        _ = shell.work()
        shell.service.snapshotWritten(report)
        _ = shell.work()  // the compaction, not answered yet
        _ = shell.send("CHAT/1 21 INTRODUCE bob", from: bob)
        _ = shell.work()
        shell.service.committed(journalLength: header + 120, now: .zero)
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work()) == nil, "its covered length would count bytes of the file before compaction")
        shell.service.compacted(journalLength: header + 60)
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work())?.users == 2, "dirty still, so the next interval writes it")
    }

    @Test func aSnapshotTakenDuringASyncHoldsThePendingChangeAsOnDisk() {
        var shell = Harness()
        shell.registerAlice()
        _ = shell.send("CHAT/1 21 INTRODUCE alicia")  // in flight when the snapshot starts
        _ = shell.send("CHAT/1 22 INTRODUCE bob", from: bob)
        _ = shell.work()
        shell.advance(.seconds(30))
        guard let job = snapshotJob(shell.work()) else {
            Issue.record("no snapshot")
            return
        }
        #expect(job.replacing == [alice.address: name("alice"), bob.address: nil])
        #expect(job.users == 1)
        // The sync fails: the snapshot never held the refused changes.
        shell.service.commitFailed(error: "EIO", journalLength: header + 60)
        shell.service.snapshotWritten(report)
        let decoded = try? Snapshot.load(
            Snapshot.encode(job.records, savedAt: 0, replacing: job.replacing), maxUsers: 10)
        #expect(decoded?.username(for: alice.address)?.text == "alice")
        #expect(decoded?.count == 1)
    }

    @Test func aSnapshotOverAJournalOfOnlyItsHeaderCompactsNothing() {
        var shell = Harness()
        _ = shell.send("CHAT/1 20 INTRODUCE alice")
        _ = shell.work()
        shell.service.commitFailed(error: "EIO", journalLength: header)  // undone, but the registry was touched
        _ = shell.transmits()
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work()) != nil)
        shell.service.snapshotWritten(report)
        #expect(shell.work().isEmpty)
        #expect(shell.isSettled)
    }

    @Test func aFailedSnapshotKeepsTheJournalAndIsRetriedAtTheNextInterval() {
        var shell = Harness()
        shell.registerAlice()
        shell.advance(.seconds(30))
        _ = shell.work()
        _ = shell.events()
        shell.service.snapshotFailed(error: "EROFS")
        #expect(shell.work().isEmpty, "no compaction: the journal is all there is")
        #expect(shell.service.snapshotError == "EROFS")
        #expect(shell.events() == [.snapshotFailed(error: "EROFS")])
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work()) != nil)
        shell.service.snapshotWritten(report)
        #expect(shell.service.snapshotError == nil)
    }

    // MARK: Life cycle

    @Test func stoppingSettlesThenWritesTheFinalSnapshot() {
        var shell = Harness()
        _ = shell.send("CHAT/1 20 INTRODUCE alice")
        _ = shell.work()
        _ = shell.send("CHAT/1 21 INTRODUCE bob", from: bob)
        shell.service.stop()
        #expect(shell.service.nextTimeout() == nil, "no periodic snapshots while stopping")
        #expect(!shell.isSettled)
        shell.service.committed(journalLength: header + 60, now: .zero)
        _ = shell.work()
        shell.service.committed(journalLength: header + 120, now: .zero)
        #expect(shell.transmitted() == ["CHAT/1 20 SUCCESS alice", "CHAT/1 21 SUCCESS bob"])
        #expect(shell.isSettled)
        shell.service.writeFinalSnapshot()
        #expect(snapshotJob(shell.work())?.users == 2)
        shell.service.snapshotWritten(report)
        guard case .compact(header + 120)? = shell.work().first else {
            Issue.record("the final snapshot covers the whole journal")
            return
        }
        #expect(shell.awaitsJournal)
        shell.service.compacted(journalLength: header)
        #expect(shell.isSettled)
    }

    @Test func reconfiguringMovesTheSnapshotDeadlineAndTheLimits() {
        var shell = Harness(maxUsers: 1)
        _ = shell.send("CHAT/1 20 INTRODUCE alice")
        #expect(shell.send("CHAT/1 21 INTRODUCE bob", from: bob) == "CHAT/1 21 ERROR SERVER_FULL")
        shell.now = shell.now + .seconds(5)
        shell.service.reconfigure(
            .init(maxUsers: 2, ratePerIP: 0, burstPerIP: 4, journaling: false, snapshotInterval: .seconds(10)),
            now: shell.now)
        #expect(shell.service.configuration.journaling, "fixed for the process's life")
        #expect(shell.service.nextTimeout() == start + .seconds(15))
        #expect(shell.send("CHAT/1 22 INTRODUCE bob", from: bob) == nil, "room now; held for its sync")
    }
}
