// ChatService's crash-safety rules under random steps (the fuzzer's input
// 0x02, ServiceSimulation.swift): datagrams, time, and storage outcomes in
// random order with random failures; after every step a crash must bring
// back exactly the registrations clients were told of. Keeping pending
// changes in a snapshot, or starting one while a compaction is pending,
// fails this within a few seeds (tried by hand).

import ChatFuzzHarness
import Testing

@Suite struct ServiceSimulationTests {
    @Test(arguments: 0..<60)
    func aCrashAtAnyStepBringsBackExactlyTheConfirmedRegistrations(seed: UInt64) throws {
        var state = seed &* 0x9e37_79b9_7f4a_7c15 | 1
        var steps: [UInt8] = []
        for _ in 0..<800 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407  // Knuth's LCG
            steps.append(UInt8(truncatingIfNeeded: state >> 56))
        }
        var simulation = ServiceSimulation(seed: seed)
        try simulation.run(steps)
    }
}
