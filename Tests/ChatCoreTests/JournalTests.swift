import ChatCore
import Testing

private func name(_ text: String) -> Username { Username(text)! }

private func record(_ address: IPAddress, _ text: String) -> [UInt8] {
    Journal.line(.registration(address, name(text)))
}

/// A line as chatd before the header wrote it, spelled out here rather than
/// by Journal.swift, which no longer writes them: the format is frozen.
private func version1Line(_ address: IPAddress, _ text: String) -> [UInt8] {
    checksummed(#"{"ip": "\#(address)", "username": "\#(text)""#)
}

/// `body` with its checksum field, as every journal line ends.
private func checksummed(_ body: String) -> [UInt8] {
    Array((body + #", "crc32": \#(CRC32.checksum(Array(body.utf8)))}"# + "\n").utf8)
}

@Suite struct JournalTests {
    /// Spelled out with their checksums, so that a change to either format
    /// fails here and not only in files written by another build.
    @Test func headerAndRecordsAreChecksummedLines() {
        #expect(String(decoding: Journal.header, as: UTF8.self) == #"{"journal": "chatd", "version": 2, "crc32": 3095150525}"# + "\n")
        #expect(String(decoding: record(IPAddress("127.0.0.5")!, "alice"), as: UTF8.self)
            == #"{"type": "registration", "ip": "127.0.0.5", "username": "alice", "crc32": 2244490487}"# + "\n")
        #expect(String(decoding: version1Line(IPAddress("127.0.0.5")!, "alice"), as: UTF8.self)
            == #"{"ip": "127.0.0.5", "username": "alice", "crc32": 88959256}"# + "\n")
    }

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xcbf4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    @Test(arguments: [IPAddress.v4(1), .loopbackIPv6, IPAddress("2001:db8::5")!])
    func eachVersionParsesItsOwnLinesOnly(address: IPAddress) {
        let v2 = record(address, "Alice.B-2")
        let v1 = version1Line(address, "Alice.B-2")
        let expected = Journal.Record.registration(address, name("Alice.B-2"))
        #expect(Journal.parse(v2.dropLast()) == expected)
        #expect(Journal.parseVersion1(v1.dropLast()) == expected)
        #expect(Journal.parse(v1.dropLast()) == nil)
        #expect(Journal.parseVersion1(v2.dropLast()) == nil)
        #expect(Journal.parse(Journal.header.dropLast()) == nil)
    }

    /// A checksummed line that ends right after the username's opening
    /// quote: the reader once cut the name as an inverted range there, and
    /// trapped instead of calling the line damaged.
    @Test func aLineEndingBeforeTheNameIsDamagedNotATrap() {
        let v1 = checksummed(#"{"ip": "127.0.0.5", "username": ""#)
        let v2 = checksummed(#"{"type": "registration", "ip": "127.0.0.5", "username": ""#)
        #expect(Journal.parseVersion1(v1.dropLast()) == nil)
        #expect(Journal.parse(v2.dropLast()) == nil)
    }

    @Test func replayReappliesChangesInOrder() throws {
        let lines =
            Journal.header
            + record(.v4(1), "alice")
            + record(.v4(2), "bob")
            + record(.v4(1), "alicia")  // rename frees alice
            + record(.v4(3), "alice")
            + record(.loopbackIPv6, "six")
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(lines, into: &registry)
        #expect(replay == Journal.Replay(lines: 5, validLength: lines.count, tornTail: false, version: 2))
        #expect(registry.username(for: .v4(1))?.text == "alicia")
        #expect(registry.username(for: .v4(3))?.text == "alice")
        #expect(registry.username(for: .loopbackIPv6)?.text == "six")
        #expect(registry.count == 4)
    }

    /// A journal left by a chatd from before the header replays as it did.
    @Test func versionOneJournalsStillReplay() throws {
        let lines =
            version1Line(.v4(1), "alice") + version1Line(.v4(2), "bob") + version1Line(.v4(1), "alicia")
            + version1Line(.loopbackIPv6, "alice")
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(lines, into: &registry)
        #expect(replay == Journal.Replay(lines: 4, validLength: lines.count, tornTail: false, version: 1))
        #expect(registry.username(for: .v4(1))?.text == "alicia")
        #expect(registry.username(for: .v4(2))?.text == "bob")
        #expect(registry.username(for: .loopbackIPv6)?.text == "alice")
    }

    @Test func anEmptyFileOrOneOfOnlyTheHeaderIsFine() throws {
        var registry = Registry(maxUsers: 10)
        #expect(try Journal.replay([], into: &registry) == Journal.Replay())
        let header = try Journal.replay(Journal.header, into: &registry)
        #expect(header == Journal.Replay(lines: 0, validLength: Journal.header.count, tornTail: false, version: 2))
        #expect(registry.count == 0)
    }

    /// A crash while a new journal's header was being written: nothing was
    /// ever confirmed in it, so it replays as empty and is cut to nothing.
    @Test(arguments: [1, 20, Journal.header.count - 1])
    func aTornHeaderIsATornTail(kept: Int) throws {
        for bytes in [Array(Journal.header.prefix(kept)), Journal.header.prefix(kept) + [UInt8](repeating: 0, count: 100)] {
            var registry = Registry(maxUsers: 10)
            let replay = try Journal.replay(bytes, into: &registry)
            #expect(replay == Journal.Replay(lines: 0, validLength: 0, tornTail: true, version: nil))
        }
    }

    /// Told apart from other damage on line 1, since the way out differs:
    /// write the header back rather than delete the line.
    @Test func aDamagedHeaderIsRefusedAsSuch() {
        for position in [1, 5, 20, Journal.header.count - 3] {
            var header = Journal.header
            header[position] ^= 0x01
            var registry = Registry(maxUsers: 10)
            #expect(throws: Journal.DamageError(line: 1, reason: .damagedHeader)) {
                try Journal.replay(header + record(.v4(1), "alice") + record(.v4(2), "bob"), into: &registry)
            }
        }
        // A damaged first line of a version-1 journal is plain damage.
        var first = version1Line(.v4(1), "alice")
        first[5] ^= 0x01
        var registry = Registry(maxUsers: 10)
        #expect(throws: Journal.DamageError(line: 1)) {
            try Journal.replay(first + version1Line(.v4(2), "bob"), into: &registry)
        }
    }

    /// A newer chatd's record is a change this one cannot apply; skipping it
    /// would lose it, so replay refuses, even when it is the last line.
    @Test func anUnknownRecordTypeIsRefused() {
        let message = checksummed(#"{"type": "reaction", "seq": 4, "emoji": "+1"}"#)
        var registry = Registry(maxUsers: 10)
        let error = Journal.DamageError(line: 3, reason: .unknownRecordType("reaction"))
        #expect(throws: error) {
            try Journal.replay(Journal.header + record(.v4(1), "alice") + message, into: &registry)
        }
        #expect(throws: error) {
            try Journal.replay(Journal.header + record(.v4(1), "alice") + message + record(.v4(2), "bob"), into: &registry)
        }
        #expect(error.description == #"journal line 3 is a record of unknown type "reaction" (written by a newer chatd?)"#)
        // Whatever bytes the type holds, the message stays one printable line.
        let odd = Journal.DamageError(line: 3, reason: .unknownRecordType("a\u{1b}[2J\nb"))
        #expect(odd.description.contains(#""a\u{1B}[2J\nb""#))
        #expect(Journal.parse(message.dropLast()) == nil)
    }

    @Test func aHeaderOfAnotherVersionIsRefused() {
        var registry = Registry(maxUsers: 10)
        let error = Journal.DamageError(line: 1, reason: .unsupportedVersion(3))
        #expect(throws: error) {
            try Journal.replay(checksummed(#"{"journal": "chatd", "version": 3"#) + record(.v4(1), "a"), into: &registry)
        }
        #expect(error.description == "journal line 1 is the header of a version-3 journal, which this chatd cannot read")
    }

    /// The header decides the format for the whole file: no mixing.
    @Test func linesOfTheOtherVersionAreDamage() {
        var registry = Registry(maxUsers: 10)
        #expect(throws: Journal.DamageError(line: 2)) {
            try Journal.replay(Journal.header + version1Line(.v4(1), "a") + record(.v4(2), "b"), into: &registry)
        }
        #expect(throws: Journal.DamageError(line: 1)) {
            try Journal.replay(record(.v4(1), "a") + version1Line(.v4(2), "b"), into: &registry)
        }
    }

    // MARK: Removals

    @Test func aRemovalIsAChecksummedLineThatParsesBack() {
        let line = Journal.line(.removal(IPAddress("127.0.0.5")!))
        #expect(String(decoding: line, as: UTF8.self) == #"{"type": "removal", "ip": "127.0.0.5", "crc32": 3362874844}"# + "\n")
        for address in [IPAddress.v4(1), .loopbackIPv6, IPAddress("2001:db8::5")!] {
            let line = Journal.line(.removal(address))
            #expect(Journal.parse(line.dropLast()) == .removal(address))
            #expect(Journal.parseVersion1(line.dropLast()) == nil)
        }
    }

    @Test(arguments: [
        #"{"type": "removal", "ip": ""#, #"{"type": "removal", "ip": """#, #"{"type": "removal", "ip": "10.0.0.300""#,
        #"{"type": "removal", "ip": "10.0.0.1", "username": "alice""#, #"{"type": "removal""#,
        #"{"type": "removal", "ip": "10.0.0.1"}"#,
    ])
    func aRemovalOfAnotherShapeIsDamage(body: String) {
        #expect(Journal.parse(checksummed(body).dropLast()) == nil)
        var registry = Registry(maxUsers: 10)
        #expect(throws: Journal.DamageError(line: 2)) {
            try Journal.replay(Journal.header + checksummed(body) + record(.v4(1), "a"), into: &registry)
        }
    }

    /// A removal is the fact "the address holds nothing": it frees the name,
    /// the address may register again, and one with nothing to remove is no
    /// error (replay may see it twice, or after a snapshot that has it).
    @Test func replayAppliesRemovalsAsFacts() throws {
        let lines =
            Journal.header
            + record(.v4(1), "alice")
            + record(.v4(2), "bob")
            + Journal.line(.removal(.v4(1)))
            + record(.v4(3), "Alice")  // the freed name, at another address
            + Journal.line(.removal(.v4(9)))  // never registered
            + record(.v4(1), "alicia")
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(lines, into: &registry)
        #expect(replay == Journal.Replay(lines: 6, validLength: lines.count, tornTail: false, version: 2))
        #expect(registry.username(for: .v4(1))?.text == "alicia")
        #expect(registry.username(for: .v4(3))?.text == "Alice")
        #expect(registry.username(for: .v4(9)) == nil)
        #expect(registry.count == 3)
        var again = registry
        _ = try Journal.replay(lines, into: &again)
        #expect(Dictionary(uniqueKeysWithValues: again.entries.map { ($0.address, $0.username) })
            == Dictionary(uniqueKeysWithValues: registry.entries.map { ($0.address, $0.username) }))
        // The last word on an address is a removal: it holds nothing.
        var removed = Registry(maxUsers: 10)
        _ = try Journal.replay(Journal.header + record(.v4(1), "alice") + Journal.line(.removal(.v4(1))), into: &removed)
        #expect(removed.isEmpty)
    }

    /// The idempotence compaction relies on, with removals among the changes.
    @Test func replayWithRemovalsOnTopOfItsOwnResultIsStable() throws {
        var generator = SplitMix64(seed: 12)
        var lines = Journal.header
        var live = Registry(maxUsers: 1000)
        var removals = 0
        for _ in 0..<3000 {
            let address = IPAddress.v4(UInt32(generator.next() % 40))
            if generator.next() % 4 == 0 {
                if live.remove(address) { removals += 1 }
                lines += Journal.line(.removal(address))
                continue
            }
            let candidate = name("n\(generator.next() % 60)")
            switch live.introduce(candidate, from: address) {
            case .registered, .renamed: lines += Journal.line(.registration(address, candidate))
            default: break
            }
        }
        #expect(removals > 100)
        var replayed = Registry(maxUsers: 1000)
        _ = try Journal.replay(lines, into: &replayed)
        _ = try Journal.replay(lines, into: &replayed)  // again, over the final state
        #expect(replayed.count == live.count)
        for entry in live.entries { #expect(replayed.username(for: entry.address) == entry.username) }
    }

    /// Replaying lines a snapshot already includes changes nothing: what makes
    /// "snapshot, then reset the journal" crash-safe.
    @Test func replayOnTopOfItsOwnResultIsStable() throws {
        var generator = SplitMix64(seed: 11)
        var lines = Journal.header
        var live = Registry(maxUsers: 1000)
        for _ in 0..<3000 {
            let address = IPAddress.v4(UInt32(generator.next() % 40))
            let candidate = name("n\(generator.next() % 60)")
            switch live.introduce(candidate, from: address) {
            case .registered, .renamed: lines += Journal.line(.registration(address, candidate))
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
        var lines = Journal.header
        for (address, text) in history {
            let outcome = live.introduce(name(text), from: .v4(address))
            #expect(outcome != .taken && outcome != .full, "the history is one chatd could write")
            lines += record(.v4(address), text)
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

    @Test(arguments: [0, 1, 10, 30], [1, 2])
    func aTornLastLineIsDroppedAndReported(cut: Int, version: Int) throws {
        let (start, good, next) =
            version == 2
            ? (Journal.header, record(.v4(1), "alice"), record(.v4(2), "bob"))
            : ([], version1Line(.v4(1), "alice"), version1Line(.v4(2), "bob"))
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(start + good + next.prefix(next.count - 1 - cut), into: &registry)
        #expect(replay == Journal.Replay(lines: 1, validLength: start.count + good.count, tornTail: true, version: version))
        #expect(registry.username(for: .v4(2)) == nil)
    }

    @Test(arguments: [1, 2])
    func aZeroFilledTailIsTornToo(version: Int) throws {
        let good = version == 2 ? Journal.header + record(.v4(1), "alice") : version1Line(.v4(1), "alice")
        var registry = Registry(maxUsers: 10)
        let replay = try Journal.replay(good + [UInt8](repeating: 0, count: 300), into: &registry)
        #expect(replay == Journal.Replay(lines: 1, validLength: good.count, tornTail: true, version: version))
    }

    /// Line numbers count the header, so that they name the file's lines.
    @Test(arguments: [1, 2])
    func damageBeforeTheEndIsRefused(version: Int) {
        let line = version == 2 ? record : version1Line
        var middle = line(.v4(2), "bob")
        middle[10] ^= 0x01  // one flipped bit
        let start = version == 2 ? Journal.header : []
        let lines = start + line(.v4(1), "alice") + middle + line(.v4(3), "carol")
        var registry = Registry(maxUsers: 10)
        let damaged = version == 2 ? 3 : 2
        #expect(throws: Journal.DamageError(line: damaged)) {
            try Journal.replay(lines, into: &registry)
        }
        #expect(Journal.DamageError(line: 2).description == "journal line 2 is damaged (bad checksum or format)")
    }

    @Test func replayKeepsConfirmedUsersEvenPastMaxUsers() throws {
        var registry = Registry(maxUsers: 1)
        let lines = Journal.header + record(.v4(1), "a") + record(.v4(2), "b")
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
        #expect(bytes == Journal.line(.registration(.v4(1), name("alice"))))
        let second = queue.startCommit()
        #expect(second == nil)  // one group in flight at a time

        // Arrives during the sync: queued for the next group.
        _ = registry.introduce(name("bob"), from: .v4(2))
        queue.record(address: .v4(2), name: name("bob"), previous: nil, reply: "bob ok")
        let released = queue.commitSucceeded()
        #expect(released == ["alice ok", "connect from 1"])
        #expect(!queue.isPending(.v4(1)) && queue.isPending(.v4(2)))
        let next = queue.startCommit()
        #expect(next == Journal.line(.registration(.v4(2), name("bob"))))
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
