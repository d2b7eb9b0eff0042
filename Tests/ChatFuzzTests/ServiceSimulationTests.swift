// ChatService's crash-safety rules under random steps (the fuzzer's input
// 0x02, ServiceSimulation.swift): datagrams, time, and storage outcomes in
// random order with random failures; after every step a crash must bring
// back exactly the registrations and messages clients were told of, and
// every push must carry messages already on disk. Keeping pending
// changes in a snapshot, or starting one while a compaction is pending,
// fails this within a few seeds (tried by hand).

import ChatFuzzHarness
import Testing

@Suite struct ServiceSimulationTests {
    @Test(arguments: 0..<60)
    func aCrashAtAnyStepBringsBackExactlyTheConfirmedRegistrations(seed: UInt64) throws {
        var simulation = ServiceSimulation(seed: seed)
        try simulation.run(Self.steps(seed: seed))
    }

    /// 800 random bytes from Knuth's LCG.
    static func steps(seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9e37_79b9_7f4a_7c15 | 1
        var steps: [UInt8] = []
        for _ in 0..<800 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            steps.append(UInt8(truncatingIfNeeded: state >> 56))
        }
        return steps
    }

    @Test func theRandomStepsReachBatchPushesAndCumulativeAcks() throws {
        var (pushes, batchPushes, acks) = (0, 0, 0)
        for seed: UInt64 in 0..<60 {
            var simulation = ServiceSimulation(seed: seed)
            try simulation.run(Self.steps(seed: seed))
            (pushes, batchPushes, acks) = (pushes + simulation.pushes, batchPushes + simulation.batchPushes, acks + simulation.acks)
        }
        #expect(pushes > 100)
        #expect(batchPushes > 10)
        #expect(acks > 10)
    }

    @Test func theRandomStepsReachRemovalsAndSnapshotRequests() throws {
        var (removals, removalsFailed, snapshotRequests) = (0, 0, 0)
        for seed: UInt64 in 0..<60 {
            var simulation = ServiceSimulation(seed: seed)
            try simulation.run(Self.steps(seed: seed))
            removals += simulation.removals
            removalsFailed += simulation.removalsFailed
            snapshotRequests += simulation.snapshotRequestsAnswered
        }
        // About 440, 290 and 420 when written.
        #expect(removals > 200)
        #expect(removalsFailed > 100)
        #expect(snapshotRequests > 200)
    }
}
