import ChatCore
import Testing

private func name(_ text: String) -> Username { Username(text)! }

@Suite struct JournalTests {
    @Test func lineFormatCarriesAChecksum() {
        let line = String(decoding: Journal.line(address: IPAddress("127.0.0.5")!, username: name("alice")), as: UTF8.self)
        let body = #"{"ip": "127.0.0.5", "username": "alice""#
        #expect(line == body + #", "crc32": \#(CRC32.checksum(Array(body.utf8)))}"# + "\n")
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xcbf4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    @Test func replayReappliesChangesInOrder() throws {
        let lines =
            Journal.line(address: .v4(1), username: name("alice"))
            + Journal.line(address: .v4(2), username: name("bob"))
            + Journal.line(address: .v4(1), username: name("alicia"))  // rename frees alice
            + Journal.line(address: .v4(3), username: name("alice"))
            + Journal.line(address: .loopbackIPv6, username: name("six"))
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(lines, into: &registry)
        #expect(replay == Journal.Replay(lines: 5, validLength: lines.count, tornTail: false))
        #expect(registry.username(for: .v4(1))?.text == "alicia")
        #expect(registry.username(for: .v4(3))?.text == "alice")
        #expect(registry.username(for: .loopbackIPv6)?.text == "six")
        #expect(registry.count == 4)
    }

    /// Replaying lines a snapshot already includes changes nothing: what makes
    /// "snapshot, then reset the journal" crash-safe.
    @Test func replayOnTopOfItsOwnResultIsStable() throws {
        var generator = SplitMix64(seed: 11)
        var lines: [UInt8] = []
        var live = Registry(maxUsers: 1000)
        for _ in 0..<3000 {
            let address = IPAddress.v4(UInt32(generator.next() % 40))
            let candidate = name("n\(generator.next() % 60)")
            switch live.introduce(candidate, from: address) {
            case .registered, .renamed: lines += Journal.line(address: address, username: candidate)
            default: break
            }
        }
        var replayed = Registry(maxUsers: 1000)
        _ = try Journal.replay(lines, into: &replayed)
        _ = try Journal.replay(lines, into: &replayed)  // again, over the final state
        #expect(replayed.count == live.count)
        for entry in live.entries { #expect(replayed.username(for: entry.address) == entry.username) }
    }

    /// Found by the property test in CI: on a snapshot newer than the
    /// journal, a name is held by an address that takes it only later in the
    /// history. Replay by the INTRODUCE rules refused the earlier line, and
    /// 10.0.0.25 came back as "carol", a name it had given up.
    @Test func replayOntoANewerSnapshotTakesNamesFromTheirLaterHolders() throws {
        let history: [(UInt32, String)] = [
            (0, "alice"), (25, "carol"), (0, "bob"), (0, "mallory"), (25, "bob"), (0, "Alice"), (1, "mallory"),
        ]
        var live = Registry(maxUsers: 3)
        var lines: [UInt8] = []
        for (address, text) in history {
            let outcome = live.introduce(name(text), from: .v4(address))
            #expect(outcome != .taken && outcome != .full, "the history is one chatd could write")
            lines += Journal.line(address: .v4(address), username: name(text))
        }
        // The snapshot was written after the last line; the journal not yet reset.
        var restored = try Snapshot.load(Snapshot.encode(live, savedAt: 0), maxUsers: 3)
        _ = try Journal.replay(lines, into: &restored)
        #expect(restored.username(for: .v4(0))?.text == "Alice")
        #expect(restored.username(for: .v4(25))?.text == "bob")
        #expect(restored.username(for: .v4(1))?.text == "mallory")
        #expect(restored.count == 3)
    }

    @Test func restoreTakesTheNameFromAnotherHolder() {
        var registry = Registry(maxUsers: 2)
        _ = registry.introduce(name("alice"), from: .v4(1))
        _ = registry.introduce(name("bob"), from: .v4(2))
        registry.restore(name("ALICE"), at: .v4(2))
        #expect(registry.username(for: .v4(2))?.text == "ALICE")
        #expect(registry.username(for: .v4(1)) == nil)
        #expect(registry.holder(of: name("bob")) == nil)
        #expect(registry.count == 1)
    }

    /// The IPv4-mapped form is the same client, so its record stays where it is.
    @Test func restoreAtTheMappedFormKeepsTheRecord() {
        var registry = Registry(maxUsers: 2)
        _ = registry.introduce(name("alice"), from: .v4(1))
        _ = registry.introduce(name("bob"), from: .v4(2))
        registry.restore(name("ALICE"), at: .v6(high: 0, low: 0xffff_0000_0001))
        #expect(registry.entries.map(\.address) == [.v4(1), .v4(2)])
        #expect(registry.username(for: .v4(1))?.text == "ALICE")
    }

    @Test(arguments: [0, 1, 10, 30])
    func aTornLastLineIsDroppedAndReported(cut: Int) throws {
        let good = Journal.line(address: .v4(1), username: name("alice"))
        let next = Journal.line(address: .v4(2), username: name("bob"))
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(good + next.prefix(next.count - 1 - cut), into: &registry)
        #expect(replay.lines == 1)
        #expect(replay.validLength == good.count)
        #expect(replay.tornTail)
        #expect(registry.username(for: .v4(2)) == nil)
    }

    @Test func aZeroFilledTailIsTornToo() throws {
        let good = Journal.line(address: .v4(1), username: name("alice"))
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(good + [UInt8](repeating: 0, count: 300), into: &registry)
        #expect(replay.tornTail && replay.validLength == good.count && replay.lines == 1)
    }

    @Test func damageBeforeTheEndIsRefused() {
        var middle = Journal.line(address: .v4(2), username: name("bob"))
        middle[10] ^= 0x01  // one flipped bit
        let lines = Journal.line(address: .v4(1), username: name("alice")) + middle + Journal.line(address: .v4(3), username: name("carol"))
        var registry = Registry(maxUsers: 10)
        #expect(throws: Journal.DamageError(line: 2)) {
            try Journal.replay(lines, into: &registry)
        }
        #expect(Journal.DamageError(line: 2).description == "journal line 2 is damaged (bad checksum or format)")
    }

    @Test func replayKeepsConfirmedUsersEvenPastMaxUsers() throws {
        var registry = Registry(maxUsers: 1)
        let lines = Journal.line(address: .v4(1), username: name("a")) + Journal.line(address: .v4(2), username: name("b"))
        _ = try Journal.replay(lines, into: &registry)
        #expect(registry.count == 2)
        #expect(registry.maxUsers == 1)
    }
}

@Suite struct RegistryRemovalTests {
    @Test func removeKeepsEveryOtherRegistrationFindable() {
        var registry = Registry(maxUsers: 100_000)
        for i in 0..<9000 { _ = registry.introduce(name("u\(i)"), from: .v4(UInt32(i))) }
        let removed = registry.remove(.v4(17))
        let again = registry.remove(.v4(17))
        let last = registry.remove(.v4(8999))  // the last one: nothing moves
        #expect(removed && !again && last)
        #expect(registry.count == 8998)
        #expect(registry.username(for: .v4(17)) == nil)
        #expect(registry.holder(of: name("u17")) == nil)
        for i in 0..<8999 where i != 17 {
            #expect(registry.username(for: .v4(UInt32(i)))?.text == "u\(i)")
            #expect(registry.holder(of: name("U\(i)")) == .v4(UInt32(i)))
        }
        let outcome = registry.introduce(name("u17"), from: .v4(50_000))
        #expect(outcome == .registered)
    }
}

@Suite struct CommitQueueTests {
    @Test func heldRepliesGoOutWhenTheirGroupIsOnDisk() {
        var registry = Registry(maxUsers: 10)
        var queue = CommitQueue<String>()
        _ = registry.introduce(name("alice"), from: .v4(1))
        queue.record(address: .v4(1), name: name("alice"), previous: nil, reply: "alice ok")
        queue.hold("connect from 1")
        #expect(queue.isPending(.v4(1)) && !queue.isPending(.v4(2)))
        let bytes = queue.startCommit()
        #expect(bytes == Journal.line(address: .v4(1), username: name("alice")))
        let second = queue.startCommit()
        #expect(second == nil)  // one group in flight at a time

        // Arrives during the sync: queued for the next group.
        _ = registry.introduce(name("bob"), from: .v4(2))
        queue.record(address: .v4(2), name: name("bob"), previous: nil, reply: "bob ok")
        let released = queue.commitSucceeded()
        #expect(released == ["alice ok", "connect from 1"])
        #expect(!queue.isPending(.v4(1)) && queue.isPending(.v4(2)))
        let next = queue.startCommit()
        #expect(next == Journal.line(address: .v4(2), username: name("bob")))
        let releasedNext = queue.commitSucceeded()
        #expect(releasedNext == ["bob ok"])
        #expect(queue.pendingChanges == 0 && !queue.isCommitting)
    }

    @Test func aFailedCommitUndoesEveryPendingChange() {
        var registry = Registry(maxUsers: 10)
        _ = registry.introduce(name("carol"), from: .v4(3))  // confirmed earlier
        var queue = CommitQueue<String>()
        // In flight: a registration and a rename.
        _ = registry.introduce(name("alice"), from: .v4(1))
        queue.record(address: .v4(1), name: name("alice"), previous: nil, reply: "r1")
        _ = registry.introduce(name("caroline"), from: .v4(3))
        queue.record(address: .v4(3), name: name("caroline"), previous: name("carol"), reply: "r2")
        let inFlight = queue.startCommit()
        #expect(inFlight != nil)
        // Queued behind it: someone takes the freed name.
        _ = registry.introduce(name("carol"), from: .v4(4))
        queue.record(address: .v4(4), name: name("carol"), previous: nil, reply: "r3")

        let returned = queue.commitFailed(registry: &registry)
        #expect(returned == ["r1", "r2", "r3"])
        #expect(registry.count == 1)
        #expect(registry.username(for: .v4(3))?.text == "carol")
        #expect(registry.username(for: .v4(1)) == nil && registry.username(for: .v4(4)) == nil)
        #expect(queue.pendingChanges == 0 && !queue.isPending(.v4(3)) && !queue.isCommitting)
        let nothing = queue.startCommit()
        #expect(nothing == nil)
    }

    /// A snapshot taken while changes are pending holds what is on disk: the
    /// same registrations as memory would after the pending sync failed.
    @Test func snapshotsLeavePendingChangesOut() throws {
        var generator = SplitMix64(seed: 7)
        var registry = Registry(maxUsers: 30)
        var queue = CommitQueue<Int>()
        var checked = 0
        for step in 0..<3000 {
            let address = IPAddress.v4(UInt32(generator.next() % 40))
            let candidate = name(["n", "N"][Int(generator.next() % 2)] + "\(generator.next() % 50)")
            switch registry.introduce(candidate, from: address) {
            case .registered: queue.record(address: address, name: candidate, previous: nil, reply: step)
            case .renamed(let previous): queue.record(address: address, name: candidate, previous: previous, reply: step)
            case .unchanged(let previous) where previous.text != candidate.text:
                queue.record(address: address, name: candidate, previous: previous, reply: step)
            default: break
            }
            switch generator.next() % 8 {
            case 0: _ = queue.startCommit()
            case 1: _ = queue.commitSucceeded()
            default: break
            }
            guard queue.pendingChanges > 0 else { continue }
            let bytes = Snapshot.encode(registry.records, savedAt: 0, replacing: queue.confirmedNames)
            let written = try Snapshot.load(bytes, maxUsers: 30)
            var undone = registry
            var failed = queue
            _ = failed.commitFailed(registry: &undone)
            #expect(mapping(written) == mapping(undone), "step \(step)")
            checked += 1
        }
        #expect(checked > 500)
    }

    @Test func confirmedNamesAreTheNamesBeforeTheFirstPendingChange() {
        var queue = CommitQueue<String>()
        queue.record(address: .v4(1), name: name("alice"), previous: nil, reply: "")
        queue.record(address: .v4(2), name: name("bobby"), previous: name("bob"), reply: "")
        _ = queue.startCommit()
        queue.record(address: .v4(1), name: name("alicia"), previous: name("alice"), reply: "")
        queue.record(address: .v6(high: 0, low: 0xffff_0000_0002), name: name("robert"), previous: name("bobby"), reply: "")
        #expect(queue.confirmedNames == [.v4(1): nil, .v4(2): name("bob")])
        _ = queue.commitSucceeded()
        #expect(queue.confirmedNames == [.v4(1): name("alice"), .v4(2): name("bobby")])
    }
}

private func mapping(_ registry: Registry) -> [IPAddress: String] {
    Dictionary(uniqueKeysWithValues: registry.entries.map { ($0.address, $0.username.text) })
}
