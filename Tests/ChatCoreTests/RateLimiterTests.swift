import ChatCore
import Testing

@Suite struct RateLimiterTests {
    let t0 = Instant(nanoseconds: 10_000_000_000)
    let alice = IPAddress("127.0.0.2")!
    let bob = IPAddress("127.0.0.3")!

    @Test func aBurstIsAllowedThenTheRate() {
        var limiter = RateLimiter(rate: 20, burst: 40, seed: 42)
        let allowed = (0..<100).filter { _ in limiter.allow(alice, now: t0) }.count
        #expect(allowed == 40)
        // A second later, 20 more tokens.
        let later = (0..<100).filter { _ in limiter.allow(alice, now: t0 + .seconds(1)) }.count
        #expect(later == 20)
        // Other addresses have buckets of their own.
        let bobAllowed = limiter.allow(bob, now: t0 + .seconds(1))
        #expect(bobAllowed)
    }

    @Test func tokensNeverExceedTheBurst() {
        var limiter = RateLimiter(rate: 20, burst: 5, seed: 42)
        _ = limiter.allow(alice, now: t0)
        let allowed = (0..<100).filter { _ in limiter.allow(alice, now: t0 + .seconds(3600)) }.count
        #expect(allowed == 5)
    }

    @Test func aSteadyClientWithinTheRateIsNeverDropped() {
        var limiter = RateLimiter(rate: 20, burst: 40, seed: 42)
        for step in 0..<1000 {  // 10 a second for 100 s
            let allowed = limiter.allow(alice, now: t0 + .milliseconds(step * 100))
            #expect(allowed)
        }
    }

    @Test func zeroRateTurnsItOff() {
        var limiter = RateLimiter(rate: 0, burst: 0, seed: 42)
        let all = (0..<10_000).allSatisfy { _ in limiter.allow(alice, now: t0) }
        #expect(all)
        #expect(limiter.trackedAddresses == 0)
    }

    @Test func spoofedSourcesCannotGrowMemory() {
        var limiter = RateLimiter(rate: 20, burst: 40, capacity: 1024, seed: 42)
        for i in 0..<100_000 {
            _ = limiter.allow(.v4(UInt32(i)), now: t0)
            #expect(limiter.trackedAddresses <= 1024)
        }
    }

    @Test func aRecentlySeenAddressSurvivesAFloodOfNewOnes() {
        var limiter = RateLimiter(rate: 1, burst: 3, capacity: 1024, seed: 42)
        for _ in 0..<3 { _ = limiter.allow(alice, now: t0) }  // alice has spent her burst
        for i in 0..<400 {
            _ = limiter.allow(.v4(0x0a00_0000 + UInt32(i)), now: t0)
            if i % 100 == 0 { _ = limiter.allow(alice, now: t0) }  // and keeps sending
        }
        let allowed = limiter.allow(alice, now: t0)
        #expect(!allowed)  // still remembered, still limited
    }
}
