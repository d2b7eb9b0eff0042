// Tests for the two system clocks: monotonic for intervals, realtime for stamps.

import ChatCore
import ChatSystem
import Testing

@Suite struct SystemClockTests {
    @Test func monotonicNeverGoesBackwards() {
        var previous = SystemClock.monotonicNow()
        for _ in 0..<1000 {
            let now = SystemClock.monotonicNow()
            #expect(now >= previous)
            previous = now
        }
    }

    @Test func wallClockIsPlausible() {
        let (seconds, nanoseconds) = SystemClock.wallSeconds()
        #expect(seconds > 1_700_000_000)  // after November 2023
        #expect((0..<1_000_000_000).contains(nanoseconds))
    }
}
