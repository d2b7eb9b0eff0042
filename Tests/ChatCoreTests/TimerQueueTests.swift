import ChatCore
import Testing

private func at(_ milliseconds: Int64) -> Instant { Instant(nanoseconds: milliseconds * 1_000_000) }

@Suite struct TimerQueueTests {
    @Test func keysFireInDeadlineOrderThenSchedulingOrder() {
        var timers = TimerQueue<String>()
        timers.schedule("c", at: at(30))
        timers.schedule("a", at: at(10))
        timers.schedule("b1", at: at(20))
        timers.schedule("b2", at: at(20))
        #expect(timers.nextDeadline() == at(10))
        #expect(timers.popDue(now: at(5)) == nil)
        var fired: [String] = []
        while let key = timers.popDue(now: at(30)) { fired.append(key) }
        #expect(fired == ["a", "b1", "b2", "c"])
        #expect(timers.isEmpty)
        #expect(timers.nextDeadline() == nil)
    }

    @Test func reschedulingReplacesTheDeadlineAndCancellingRemovesIt() {
        var timers = TimerQueue<Int>()
        timers.schedule(1, at: at(10))
        timers.schedule(2, at: at(20))
        timers.schedule(1, at: at(40))
        #expect(timers.deadline(of: 1) == at(40))
        #expect(timers.count == 2)
        timers.cancel(2)
        #expect(timers.nextDeadline() == at(40), "stale and cancelled entries never surface")
        #expect(timers.popDue(now: at(39)) == nil)
        #expect(timers.popDue(now: at(40)) == 1)
        #expect(timers.popDue(now: at(1000)) == nil)
    }

    /// Tens of thousands of deadlines re-armed again and again: the queue
    /// stays correct and fires only the live ones, once each.
    @Test func manyRearmedDeadlinesFireOnceEach() {
        var timers = TimerQueue<Int>()
        var generator = SplitMix64(seed: 3)
        var model: [Int: Int64] = [:]
        for round in 0..<5 {
            for key in 0..<20_000 {
                if generator.next() % 4 == 0 {
                    timers.cancel(key)
                    model[key] = nil
                } else {
                    let deadline = Int64(round * 1000) + Int64(generator.next() % 1000)
                    timers.schedule(key, at: at(deadline))
                    model[key] = deadline
                }
            }
        }
        #expect(timers.count == model.count)
        var last = Int64.min
        var fired = Set<Int>()
        while let key = timers.popDue(now: at(10_000)) {
            let deadline = model[key]!
            #expect(deadline >= last)
            last = deadline
            #expect(fired.insert(key).inserted)
        }
        #expect(fired == Set(model.keys))
    }
}
