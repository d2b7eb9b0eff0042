// Replays the fuzz corpus (Fuzz/corpus) and the minimised crashes
// (Fuzz/regressions) through the fuzz harness's checks, without libFuzzer,
// so that `make test` keeps every input the fuzzer was ever given or found
// passing. Each file runs once against a fresh harness and once as part of
// the whole sequence against one harness (the registry persists, as under
// libFuzzer). A file added to either folder is picked up without a code change.

import ChatCore
import ChatFuzzHarness
import Foundation
import Testing

private let fuzzFolder = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz")

/// The files of `Fuzz/<folder>`, in name order (none if the folder is absent).
private func inputs(_ folder: String) -> [URL] {
    let url = fuzzFolder.appendingPathComponent(folder)
    let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
    return names.filter { !$0.hasPrefix(".") }.sorted().map { url.appendingPathComponent($0) }
}

private func read(_ url: URL) throws -> [UInt8] {
    Array(try Data(contentsOf: url))
}

@Suite struct CorpusReplayTests {
    static let corpus = inputs("corpus")
    static let regressions = inputs("regressions")

    @Test func theCorpusIsThere() {
        #expect(Self.corpus.count >= 12, "Fuzz/corpus at \(fuzzFolder.path)")
    }

    @Test(arguments: corpus + regressions)
    func eachInputAlone(_ url: URL) throws {
        var harness = FuzzHarness()
        try harness.run(try read(url))
    }

    @Test func allInputsInOneRegistry() throws {
        var harness = FuzzHarness()
        for url in Self.corpus + Self.regressions {
            do {
                try harness.run(try read(url))
            } catch {
                Issue.record("\(url.lastPathComponent): \(error)")
            }
        }
    }

    /// The seed corpus reaches every outcome of the handler and both ends of
    /// the snapshot reader, so the fuzzer starts from all of them.
    @Test func theCorpusReachesEveryOutcome() throws {
        var harness = FuzzHarness()
        for url in Self.corpus { try harness.run(try read(url)) }
        let statistics = harness.statistics
        for event in [
            "dropped", "malformed", "unsupportedVersion", "connected", "notFound", "registered", "renamed",
            "reintroduced", "invalidUsername", "taken", "full",
        ] {
            #expect(statistics.events[event, default: 0] > 0, "no input of the corpus ends \(event)")
        }
        #expect(statistics.snapshotsLoaded > 0)
        #expect(statistics.snapshotsRefused > 0)
        #expect(statistics.scripts > 0)
        #expect(statistics.removals > 0)
        #expect(statistics.journalsReplayed > 0)
        #expect(statistics.journalsRefused > 0)
        #expect(statistics.serviceSimulations > 0)
        #expect(statistics.controlRequests >= 4)
    }
}

/// The harness must catch what it claims to: inputs built to break a rule
/// are no help if the checks are vacuous, so these feed the harness states
/// and inputs whose outcome is known.
@Suite struct FuzzHarnessTests {
    @Test func aFullRegistryRefusesNewAddressesOnly() throws {
        var harness = FuzzHarness()
        // max_users 1 + 0 % 8 = 1: the second address is refused, a rename is not.
        var script: [UInt8] = [0, 0]
        for (address, text) in [(UInt8(1), "CHAT/1 1 INTRODUCE a"), (2, "CHAT/1 2 INTRODUCE b"), (1, "CHAT/1 3 INTRODUCE b")] {
            script += [address] + Array(text.utf8) + [0]
        }
        try harness.run(script)
        #expect(harness.statistics.events["registered"] == 1)
        #expect(harness.statistics.events["full"] == 1)
        #expect(harness.statistics.events["renamed"] == 1)
    }

    @Test func mappedAddressesAreTheSameClient() throws {
        var harness = FuzzHarness()
        // 0x05 is 10.0.0.5 and 0xe5 its mapped form ::ffff:10.0.0.5 (folded to IPv4);
        // 0x06 is 10.0.0.6 and 0xe6 its mapped form as a raw `.v6`.
        try harness.run([0x05] + Array("CHAT/1 1 INTRODUCE alice".utf8))
        try harness.run([0xe5] + Array("CHAT/1 2 CONNECT".utf8))
        try harness.run([0x06] + Array("CHAT/1 3 INTRODUCE bob".utf8))
        try harness.run([0xe6] + Array("CHAT/1 4 INTRODUCE BOB".utf8))
        #expect(harness.statistics.events["connected"] == 1)
        #expect(harness.statistics.events["reintroduced"] == 1)
    }

    @Test func scriptsLeaveTheKeptRegistryAlone() throws {
        var harness = FuzzHarness()
        try harness.run([0x05] + Array("CHAT/1 1 INTRODUCE alice".utf8))
        try harness.run([0, 3, 0x05] + Array("CHAT/1 2 INTRODUCE bob".utf8))
        try harness.run([0x05] + Array("CHAT/1 3 CONNECT".utf8))
        #expect(harness.statistics.events["connected"] == 1)
        #expect(harness.statistics.events["registered"] == 2)
    }

    /// Journal lines are facts: one naming a name that another address holds
    /// in the kept registry takes it (CI's fuzz run met this once replay
    /// stopped following the INTRODUCE rules), and a second replay of the
    /// same journal changes nothing.
    @Test func aJournalLineTakesItsNameFromTheKeptHolder() throws {
        var harness = FuzzHarness()
        try harness.run([0x07] + Array("CHAT/1 1 INTRODUCE bob".utf8))
        let journal = Journal.header + Journal.line(.registration(.v4(0x0a00_0005), Username("BOB")!))
        try harness.run([1] + journal)
        try harness.run([1] + journal)
        try harness.run([0x07] + Array("CHAT/1 2 CONNECT".utf8))
        try harness.run([0x05] + Array("CHAT/1 3 CONNECT".utf8))
        #expect(harness.statistics.journalsReplayed == 2)
        #expect(harness.statistics.events["notFound"] == 1)
        #expect(harness.statistics.events["connected"] == 1)
    }

    @Test func snapshotsReplaceTheRegistry() throws {
        var harness = FuzzHarness()
        let snapshot = #"{"version": 1, "users": [{"ip": "10.0.0.7", "username": "carol"}]}"#
        try harness.run(Array(snapshot.utf8))
        try harness.run([0x07] + Array("CHAT/1 1 CONNECT".utf8))
        #expect(harness.statistics.snapshotsLoaded == 1)
        #expect(harness.statistics.events["connected"] == 1)
    }
}
