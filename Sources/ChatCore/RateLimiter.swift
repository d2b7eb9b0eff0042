// Per-source-address token buckets, so one address cannot take the server
// for itself, and so chatd cannot be used to reflect traffic at a victim
// whose address a flood spoofs.
//
// Each address has a bucket of `burst` tokens refilled at `rate` per
// second; a datagram takes one token or is dropped, unanswered. Buckets
// live in two generations of at most `capacity / 2` addresses each: new and
// recently seen addresses go to the current one; when it is full it becomes
// the previous one and the old previous one is forgotten. That bounds
// memory whatever addresses a flood forges, approximates least-recently-used
// eviction, and costs one or two hash lookups a datagram. A forgotten
// address starts again with a full bucket, which only ever errs towards
// answering. Time is passed in.

public struct RateLimiter: Sendable {
    public var rate: Double
    public var burst: Double
    public let capacity: Int

    private struct Bucket: Sendable {
        var tokens: Double
        var stamp: Instant
    }

    private var current: [IPAddress: Bucket] = [:]
    private var previous: [IPAddress: Bucket] = [:]

    /// - Parameters:
    ///   - rate: tokens per second per address; 0 turns limiting off.
    ///   - burst: the most tokens an address can save up.
    ///   - capacity: the most addresses remembered.
    public init(rate: Double, burst: Double, capacity: Int = 65_536) {
        precondition(rate >= 0 && burst >= 0 && capacity >= 2)
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        current.reserveCapacity(capacity / 2)
    }

    public var isEnabled: Bool { rate > 0 }

    /// Addresses remembered now (at most `capacity`).
    public var trackedAddresses: Int { current.count + previous.count }

    /// Takes a token for a datagram from `address`; false means drop it.
    public mutating func allow(_ address: IPAddress, now: Instant) -> Bool {
        guard rate > 0 else { return true }
        var bucket = current[address] ?? previous.removeValue(forKey: address) ?? Bucket(tokens: burst, stamp: now)
        let elapsed = Double((now - bucket.stamp).nanoseconds) / 1e9
        if elapsed > 0 {
            bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
            bucket.stamp = now
        }
        let allowed = bucket.tokens >= 1
        if allowed { bucket.tokens -= 1 }
        if current.updateValue(bucket, forKey: address) == nil, current.count >= capacity / 2 {
            previous = current
            current = [:]
            current.reserveCapacity(capacity / 2)
        }
        return allowed
    }
}
