// An administrator's requests (chatctl remove, chatctl snapshot) on virtual
// time: the test plays the shell, answering storage work with outcomes of
// its choosing, and checks that each outcome comes back with its ticket
// exactly when it is true.

import ChatCore
import Testing

private let alice = Endpoint(IPAddress("127.0.0.2")!, port: 4000)
private let bob = Endpoint(IPAddress("127.0.0.3")!, port: 4001)
private let carol = Endpoint(IPAddress("127.0.0.4")!, port: 4002)
private let start = Instant(nanoseconds: 1_000_000_000)
private let header = Journal.header.count
private let report = ChatService.SnapshotReport(savedAt: 1_700_000_000, bytes: 100, duration: .milliseconds(3))

private func name(_ text: String) -> Username { Username(text)! }

private func hex(_ cookie: UInt64) -> String {
    var bytes: [UInt8] = []
    CookieText.append(cookie, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
}

private struct Harness {
    var service: ChatService
    var now = start
    /// What the journal on disk would hold, past its header.
    var journal: [UInt8] = []

    init(journaling: Bool = true) {
        service = ChatService(
            configuration: .init(
                maxUsers: 100, ratePerIP: 0, burstPerIP: 4, journaling: journaling, snapshotInterval: .seconds(30)),
            registry: Registry(maxUsers: 100), journalLength: journaling ? header : 0, now: start, seed: 7)
    }

    mutating func send(_ text: String, from source: Endpoint = alice) -> String? {
        var reply: [UInt8] = []
        let answered = Array(text.utf8).withUnsafeBytes {
            service.handle(datagram: $0, from: source, socket: 0, now: now, reply: &reply)
        }
        return answered ? String(decoding: reply, as: UTF8.self) : nil
    }

    /// A chat request with `source`'s cookie.
    mutating func chat(_ verb: String, id: Int, from source: Endpoint = alice, _ rest: String? = nil) -> String? {
        send("CHAT/1 \(id) \(verb) \(hex(service.cookie(for: source)))" + (rest.map { " " + $0 } ?? ""), from: source)
    }

    mutating func work() -> [ChatService.StorageWork] {
        var all: [ChatService.StorageWork] = []
        while let work = service.pollStorageWork() { all.append(work) }
        return all
    }

    /// The journal group queued now, or nil.
    mutating func group() -> [UInt8]? {
        for work in work() { if case .commit(let lines) = work { return lines } }
        return nil
    }

    /// The group in flight is synced.
    mutating func sync(_ lines: [UInt8]) {
        journal += lines
        service.committed(journalLength: header + journal.count, now: now)
    }

    /// Changes handled so far are synced, with every group they need.
    mutating func syncAll() {
        while let lines = group() { sync(lines) }
    }

    mutating func transmitted() -> [String] {
        var all: [String] = []
        while let transmit = service.pollTransmit() { all.append(String(decoding: transmit.bytes, as: UTF8.self)) }
        return all
    }

    mutating func events() -> [ChatService.Event] {
        var all: [ChatService.Event] = []
        while let event = service.pollEvent() { all.append(event) }
        return all
    }

    /// `source` registers `text`, synced and answered.
    mutating func register(_ text: String, from source: Endpoint = alice) {
        _ = send("CHAT/1 1 INTRODUCE \(text)", from: source)
        syncAll()
        _ = transmitted()
        _ = events()
    }

    mutating func advance(_ duration: Duration) {
        now = now + duration
        service.handleTimeout(now: now)
    }

    var names: [IPAddress: Username] {
        Dictionary(uniqueKeysWithValues: service.registry.entries.map { ($0.address, $0.username) })
    }
    var isSettled: Bool { service.isSettled }
}

private func snapshotJob(_ work: [ChatService.StorageWork]) -> ChatService.SnapshotJob? {
    for item in work { if case .writeSnapshot(let job) = item { return job } }
    return nil
}

private func compaction(_ work: [ChatService.StorageWork]) -> Int? {
    for item in work { if case .compact(let count) = item { return count } }
    return nil
}

private func finished(_ events: [ChatService.Event]) -> [ChatService.Event] {
    events.filter { if case .snapshotRequestFinished = $0 { true } else { false } }
}

@Suite struct AdminTests {
    // MARK: Removal

    @Test func withoutAJournalARemovalIsDoneAndReportedAtOnce() {
        var shell = Harness(journaling: false)
        shell.register("alice")
        shell.advance(.seconds(30))
        _ = shell.work()
        shell.service.snapshotWritten(report)
        _ = shell.events()
        #expect(shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now) == .removed(name("alice")))
        #expect(shell.events() == [.removed(name("alice"), address: alice.address, ticket: 7)])
        #expect(shell.send("CHAT/1 2 CONNECT") == "CHAT/1 2 ERROR CLIENT_NOT_FOUND")
        #expect(shell.work().isEmpty, "no journal")
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work())?.users == 0, "the registry is dirty: the next snapshot has it")
    }

    @Test func aRemovalIsReportedOnlyOnceOnDiskAndRepliesToItsAddressWait() {
        var shell = Harness()
        shell.register("alice")
        #expect(shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now) == .pending(name("alice")))
        #expect(shell.events().isEmpty, "not true yet")
        #expect(shell.service.registry.username(for: alice.address) == nil, "applied at once")
        #expect(shell.send("CHAT/1 21 CONNECT") == nil, "held: its answer reflects the pending removal")
        #expect(shell.send("CHAT/1 22 CONNECT", from: bob) == "CHAT/1 22 ERROR CLIENT_NOT_FOUND", "others are not held")
        let lines = shell.group()
        #expect(lines == Journal.line(.removal(alice.address)))
        #expect(shell.transmitted().isEmpty)
        shell.sync(lines ?? [])
        #expect(shell.events() == [.removed(name("alice"), address: alice.address, ticket: 7)])
        #expect(shell.transmitted() == ["CHAT/1 21 ERROR CLIENT_NOT_FOUND"])
        #expect(shell.isSettled)
        #expect(shell.service.journalBytes == header + shell.journal.count)
    }

    @Test func aFailedSyncGivesTheNameBackAndAnswersTheHeldConnectAfresh() {
        var shell = Harness()
        shell.register("alice")
        _ = shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now)
        _ = shell.send("CHAT/1 21 CONNECT")
        #expect(shell.group() != nil)
        shell.service.commitFailed(error: "EIO", journalLength: header + shell.journal.count)
        #expect(shell.events() == [
            .journalFailed(error: "EIO"),
            .removalFailed(name("alice"), address: alice.address, ticket: 7, error: "EIO"),
        ])
        #expect(shell.transmitted() == ["CHAT/1 21 SUCCESS alice"])
        #expect(shell.names == [alice.address: name("alice")])
        #expect(shell.isSettled)
    }

    @Test(arguments: [true, false])
    func removingAnUnregisteredAddressChangesNothing(journaling: Bool) {
        var shell = Harness(journaling: journaling)
        shell.register("bob", from: bob)
        #expect(shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now) == .notRegistered)
        #expect(shell.work().isEmpty)
        #expect(shell.events().isEmpty)
        #expect(shell.send("CHAT/1 21 CONNECT", from: bob) == "CHAT/1 21 SUCCESS bob", "nothing pending")
    }

    /// A later change took the freed name: both are undone, and alice has
    /// her name back, whether both share a group or not.
    @Test(arguments: [false, true])
    func aFailedSyncUndoesAFreedNameTakenByALaterChange(separateGroups: Bool) {
        var shell = Harness()
        shell.register("alice")
        _ = shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now)
        if separateGroups { #expect(shell.group() != nil) }
        #expect(shell.send("CHAT/1 21 INTRODUCE Alice", from: bob) == nil)
        #expect(shell.service.registry.holder(of: name("alice")) == bob.address)
        if !separateGroups {
            #expect(shell.group().map { String(decoding: $0, as: UTF8.self).split(separator: "\n").count } == 2)
        }
        _ = shell.events()
        shell.service.commitFailed(error: "EIO", journalLength: header + shell.journal.count)
        #expect(shell.names == [alice.address: name("alice")])
        #expect(shell.transmitted() == ["CHAT/1 21 ERROR UNAVAILABLE"])
        #expect(shell.events().contains(.removalFailed(name("alice"), address: alice.address, ticket: 7, error: "EIO")))
    }

    /// Undone in forward order, alice's name would come back first and her
    /// new registration's undo would then remove it.
    @Test func aFailedSyncUndoesARegistrationAfterTheRemovalFirst() {
        var shell = Harness()
        shell.register("alice")
        _ = shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now)
        #expect(shell.send("CHAT/1 21 INTRODUCE alicia") == nil)
        #expect(shell.names == [alice.address: name("alicia")])
        #expect(shell.group() != nil)
        shell.service.commitFailed(error: "EIO", journalLength: header + shell.journal.count)
        #expect(shell.names == [alice.address: name("alice")])
        #expect(shell.transmitted() == ["CHAT/1 21 ERROR UNAVAILABLE"])
    }

    @Test func aSyncedGroupWithARemovalReportsInOrderAndReplaysToTheRegistry() {
        var shell = Harness()
        shell.register("alice")
        let before = shell.journal
        _ = shell.send("CHAT/1 21 INTRODUCE bob", from: bob)
        _ = shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now)
        _ = shell.send("CHAT/1 22 INTRODUCE alice", from: carol)  // the freed name
        _ = shell.send("CHAT/1 23 INTRODUCE alicia")  // alice's address, new again
        _ = shell.service.removeRegistration(of: bob.address, ticket: 8, now: shell.now)
        let group = shell.group() ?? []
        #expect(String(decoding: group, as: UTF8.self).split(separator: "\n").count == 5)
        shell.sync(group)
        #expect(shell.events() == [
            .registered(name("bob"), client: bob, requestID: 21),
            .removed(name("alice"), address: alice.address, ticket: 7),
            .registered(name("alice"), client: carol, requestID: 22),
            .registered(name("alicia"), client: alice, requestID: 23),
            .removed(name("bob"), address: bob.address, ticket: 8),
        ])
        #expect(shell.names == [alice.address: name("alicia"), carol.address: name("alice")])
        var replayed = Registry(maxUsers: 100)
        _ = try? Journal.replay(Journal.header + before + group, into: &replayed)
        #expect(Dictionary(uniqueKeysWithValues: replayed.entries.map { ($0.address, $0.username) }) == shell.names)
    }

    /// Rule 1: a snapshot taken while a removal is pending holds the name as
    /// the journal on disk does, so a failed sync cannot lose it.
    @Test func aSnapshotTakenDuringARemovalsSyncHoldsTheNameAsOnDisk() throws {
        var shell = Harness()
        shell.register("alice")
        shell.register("bob", from: bob)
        _ = shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now)
        #expect(shell.group() != nil)
        shell.advance(.seconds(30))
        let job = try #require(snapshotJob(shell.work()))
        #expect(job.replacing == [alice.address: name("alice")])
        #expect(job.users == 2)
        shell.service.commitFailed(error: "EIO", journalLength: header + shell.journal.count)
        let decoded = try Snapshot.load(Snapshot.encode(job.records, savedAt: 0, replacing: job.replacing), maxUsers: 10)
        #expect(Dictionary(uniqueKeysWithValues: decoded.entries.map { ($0.address, $0.username) }) == shell.names)
    }

    @Test(arguments: [true, false])
    func theMemberAtTheAddressLeavesAtOnceWithEverythingInFlightToIt(journaling: Bool) {
        var shell = Harness(journaling: journaling)
        shell.register("alice")
        shell.register("bob", from: bob)
        #expect(shell.chat("JOIN", id: 2)?.hasPrefix("CHAT/1 2 SUCCESS alice") == true)
        _ = shell.chat("JOIN", id: 3, from: bob)
        _ = shell.chat("SAY", id: 4, from: bob, "1 hi")
        shell.syncAll()
        #expect(shell.transmitted().count(where: { $0.hasSuffix("hi") }) == 2, "a push to each, unacknowledged")
        _ = shell.events()
        _ = shell.service.removeRegistration(of: alice.address, ticket: 7, now: shell.now)
        #expect(shell.events().contains(.memberLeft(name("alice"), client: alice, reason: .removed)))
        #expect(shell.service.memberCount == 1)
        #expect(shell.service.counters.membersDropped == 1)
        shell.syncAll()
        shell.advance(.seconds(1))
        let retransmissions = shell.transmitted()
        #expect(retransmissions.count(where: { $0.hasSuffix("hi") }) == 1, "bob's only: alice's push went with her")
        #expect(LeaveReason.removed.rawValue == "removed")
    }

    // MARK: Snapshot requests

    @Test func aRequestWhenIdleWritesASnapshotAtOnceEvenIfNothingChanged() {
        var shell = Harness()
        shell.service.requestSnapshot(ticket: 1)
        #expect(snapshotJob(shell.work())?.users == 0)
        shell.service.snapshotWritten(report)
        #expect(shell.events() == [
            .snapshotWritten(report, users: 0),
            .snapshotRequestFinished(ticket: 1, report: report, users: 0, error: nil),
        ])
        #expect(shell.isSettled)
    }

    /// The snapshot in flight was taken before the request, so it does not
    /// answer it; the next one, queued once it and its compaction are done,
    /// answers every request that waited.
    @Test func aRequestDuringASnapshotWaitsForTheNextOneWhichHoldsLaterChanges() throws {
        var shell = Harness()
        shell.register("alice")
        shell.service.requestSnapshot(ticket: 1)
        #expect(snapshotJob(shell.work())?.users == 1)
        shell.register("bob", from: bob)
        shell.service.requestSnapshot(ticket: 2)
        shell.service.requestSnapshot(ticket: 3)
        #expect(shell.work().isEmpty, "one snapshot at a time")
        shell.service.snapshotWritten(report)
        #expect(finished(shell.events()) == [.snapshotRequestFinished(ticket: 1, report: report, users: 1, error: nil)])
        let work = shell.work()
        #expect(compaction(work) != nil)
        #expect(snapshotJob(work) == nil, "rule 3: not beside a compaction")
        shell.service.compacted(journalLength: header + 60)
        let job = try #require(snapshotJob(shell.work()))
        #expect(job.users == 2, "bob, registered after the first snapshot started")
        shell.service.snapshotWritten(report)
        #expect(finished(shell.events()) == [
            .snapshotRequestFinished(ticket: 2, report: report, users: 2, error: nil),
            .snapshotRequestFinished(ticket: 3, report: report, users: 2, error: nil),
        ])
    }

    @Test func aRequestDuringACompactionWaitsForItEvenIfItFails() throws {
        var shell = Harness()
        shell.register("alice")
        shell.advance(.seconds(30))
        #expect(snapshotJob(shell.work()) != nil)
        shell.service.snapshotWritten(report)
        #expect(compaction(shell.work()) != nil)
        _ = shell.events()
        shell.service.requestSnapshot(ticket: 4)
        #expect(shell.work().isEmpty)
        shell.service.compactionFailed(error: "EIO")
        #expect(snapshotJob(shell.work()) != nil)
        shell.service.snapshotWritten(report)
        #expect(finished(shell.events()) == [.snapshotRequestFinished(ticket: 4, report: report, users: 1, error: nil)])
    }

    @Test func aFailedSnapshotFailsItsRequestsAndThenServesTheWaitingOnes() {
        var shell = Harness()
        shell.register("alice")
        shell.service.requestSnapshot(ticket: 5)
        _ = shell.work()
        shell.service.requestSnapshot(ticket: 6)
        shell.service.snapshotFailed(error: "ENOSPC")
        #expect(shell.events() == [
            .snapshotFailed(error: "ENOSPC"),
            .snapshotRequestFinished(ticket: 5, report: nil, users: 1, error: "ENOSPC"),
        ])
        #expect(snapshotJob(shell.work()) != nil, "no compaction after a failure: the next one starts at once")
        shell.service.snapshotFailed(error: "ENOSPC")
        #expect(finished(shell.events()) == [.snapshotRequestFinished(ticket: 6, report: nil, users: 1, error: "ENOSPC")])
        #expect(shell.isSettled)
    }

    @Test func stoppingFailsTheWaitingRequestsButNotTheOneInFlight() {
        var shell = Harness()
        shell.register("alice")
        shell.service.requestSnapshot(ticket: 7)
        _ = shell.work()
        shell.service.requestSnapshot(ticket: 8)
        shell.service.stop()
        #expect(shell.events() == [.snapshotRequestFinished(ticket: 8, report: nil, users: 1, error: "chatd is stopping")])
        shell.service.requestSnapshot(ticket: 9)
        #expect(shell.events() == [.snapshotRequestFinished(ticket: 9, report: nil, users: 1, error: "chatd is stopping")])
        shell.service.snapshotWritten(report)
        #expect(finished(shell.events()) == [.snapshotRequestFinished(ticket: 7, report: report, users: 1, error: nil)])
        #expect(compaction(shell.work()) == header + shell.journal.count)
        shell.service.compacted(journalLength: header)
        #expect(shell.work().isEmpty, "no snapshot for the failed requests")
        #expect(shell.isSettled)
        shell.service.writeFinalSnapshot()
        #expect(snapshotJob(shell.work()) != nil)
        shell.service.snapshotWritten(report)
        #expect(finished(shell.events()).isEmpty, "the final snapshot answers no request")
    }

    @Test func journalBytesCountTheHeaderAndAreZeroWithoutAJournal() {
        var shell = Harness()
        #expect(shell.service.journalBytes == header)
        shell.register("alice")
        #expect(shell.service.journalBytes == header + shell.journal.count)
        #expect(Harness(journaling: false).service.journalBytes == 0)
    }
}
