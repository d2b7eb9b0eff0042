import ChatCore
import Testing

@Suite struct ThrottleTests {
    let t0 = Instant(nanoseconds: 5_000_000_000)

    @Test func firstEventIsReportedAtOnceAndTheRestAreCounted() {
        var throttle = Throttle<String>(window: .seconds(10))
        #expect(throttle.record("malformed", now: t0) == 1)
        for second in 1...9 {
            #expect(throttle.record("malformed", now: t0 + .seconds(second)) == nil)
        }
        #expect(throttle.due(now: t0 + .milliseconds(9999)).isEmpty)
        // The next event after the window reports itself and the nine held back.
        #expect(throttle.record("malformed", now: t0 + .seconds(10)) == 10)
    }

    @Test func aBurstsTailIsReportedOnceItsWindowPasses() {
        var throttle = Throttle<String>(window: .seconds(10))
        _ = throttle.record("send", now: t0)
        for _ in 0..<1000 { _ = throttle.record("send", now: t0 + .seconds(1)) }
        let due = throttle.due(now: t0 + .seconds(10))
        #expect(due.count == 1)
        #expect(due.first?.kind == "send")
        #expect(due.first?.count == 1000)
        #expect(throttle.due(now: t0 + .seconds(30)).isEmpty)
        // Reported at t0+10: a new event within the window waits.
        #expect(throttle.record("send", now: t0 + .seconds(15)) == nil)
        #expect(throttle.record("send", now: t0 + .seconds(21)) == 2)
    }

    @Test func kindsAreIndependent() {
        var throttle = Throttle<String>(window: .seconds(10))
        #expect(throttle.record("a", now: t0) == 1)
        #expect(throttle.record("b", now: t0) == 1)
        #expect(throttle.record("a", now: t0 + .seconds(1)) == nil)
        #expect(throttle.record("b", now: t0 + .seconds(11)) == 1)
    }

    @Test func atMostOneReportPerWindowUnderAFlood() {
        var throttle = Throttle<Int>(window: .seconds(10))
        var reports = 0
        var total = 0
        var now = t0
        for _ in 0..<100_000 {
            now = now + .milliseconds(1)  // 100 s of 1000 events per second
            if let count = throttle.record(0, now: now) { reports += 1; total += count }
            for due in throttle.due(now: now) { reports += 1; total += due.count }
        }
        #expect(reports <= 11)
        // Every event is counted in some report, except those still held back.
        let held = throttle.due(now: now + .seconds(10)).reduce(0) { $0 + $1.count }
        #expect(total + held == 100_000)
    }
}
