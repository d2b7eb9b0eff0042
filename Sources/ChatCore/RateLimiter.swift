// Per-source-address token buckets, so one address cannot take the server
// for itself, and so chatd cannot be used to reflect traffic at a victim
// whose address a flood forges.
//
// Each address has a bucket of `burst` tokens refilled at `rate` per
// second; a datagram takes one token or is dropped, unanswered. Buckets
// live in two generations of at most `capacity / 2` addresses each: new and
// recently seen addresses go to the current one; when it is full it becomes
// the previous one and the old previous one is forgotten. That bounds
// memory whatever addresses a flood forges and approximates
// least-recently-used eviction. A forgotten address starts again with a full
// bucket, which only ever errs towards answering.
//
// This runs for every datagram before anything else, so its cost counts
// against the server's whole budget: each generation is an open-addressing
// table of plain 32-byte slots (address, tokens, time), at most half full,
// probed with a multiplicative hash keyed by a random seed, so a flood
// cannot aim its forged addresses at one chain. The standard Dictionary's
// SipHash cost three times as much. Time and the seed are passed in.

public struct RateLimiter: Sendable {
    public var rate: Double
    public var burst: Double
    public let capacity: Int
    private let seed: UInt64
    private var current: Table
    private var previous: Table

    /// - Parameters:
    ///   - rate: tokens per second per address; 0 turns limiting off.
    ///   - burst: the most tokens an address can save up.
    ///   - capacity: the most addresses remembered (rounded up to a power of 2).
    ///   - seed: random, so that nobody can predict which addresses collide.
    public init(rate: Double, burst: Double, capacity: Int = 65_536, seed: UInt64) {
        precondition(rate >= 0 && burst >= 0 && capacity >= 2)
        self.rate = rate
        self.burst = burst
        var size = 2
        while size < capacity { size *= 2 }
        self.capacity = size
        self.seed = seed
        // Allocated at the first datagram it limits: with limiting off, or in
        // a test that makes many services, 2 MiB of slots would go unused.
        current = Table(slots: 0)
        previous = Table(slots: 0)
    }


    /// Addresses remembered now (at most `capacity`).
    public var trackedAddresses: Int { current.count + previous.count }

    /// Takes a token for a datagram from `address`; false means drop it.
    public mutating func allow(_ address: IPAddress, now: Instant) -> Bool {
        guard rate > 0 else { return true }
        let (high, low) = address.ipv6Halves
        let hash = Self.hash(high, low, seed: seed)
        let (rate, burst) = (self.rate, self.burst)
        // A generation holds capacity / 2 addresses in twice as many slots.
        if current.slots.isEmpty { current = Table(slots: capacity) }
        var position = current.position(high, low, hash: hash)
        if current.slots[position].isUsed {
            // The common case, an address seen lately: updated in place.
            return current.slots[position].take(now: now.nanoseconds, rate: rate, burst: burst)
        }
        var slot = Slot(high: high, low: low, tokens: burst, stamp: now.nanoseconds)
        if !previous.slots.isEmpty {
            let old = previous.position(high, low, hash: hash)
            if previous.slots[old].isUsed { slot = previous.slots[old] }
        }
        let allowed = slot.take(now: now.nanoseconds, rate: rate, burst: burst)
        if current.count >= capacity / 2 {
            previous = current
            current = Table(slots: capacity)
            position = current.position(high, low, hash: hash)
        }
        current.slots[position] = slot
        current.count += 1
        return allowed
    }

    /// A keyed multiply-xorshift mix of the address's 128 bits.
    private static func hash(_ high: UInt64, _ low: UInt64, seed: UInt64) -> Int {
        var x = (high ^ seed) &* 0x9e37_79b9_7f4a_7c15
        x ^= (low ^ (seed >> 17 | seed << 47)) &* 0xc2b2_ae3d_27d4_eb4f
        x ^= x >> 31
        x &*= 0xd6e8_feb8_6659_fd93
        x ^= x >> 32
        return Int(truncatingIfNeeded: x)
    }

    /// One address's bucket; `stamp == .min` marks an empty slot.
    private struct Slot: Sendable {
        var high: UInt64
        var low: UInt64
        var tokens: Double
        var stamp: Int64

        static let empty = Slot(high: 0, low: 0, tokens: 0, stamp: .min)

        var isUsed: Bool { stamp != .min }

        mutating func take(now: Int64, rate: Double, burst: Double) -> Bool {
            let elapsed = now - stamp
            if elapsed > 0 {
                tokens = min(burst, tokens + Double(elapsed) * rate * 1e-9)
                stamp = now
            }
            guard tokens >= 1 else { return false }
            tokens -= 1
            return true
        }
    }

    private struct Table: Sendable {
        var slots: [Slot]
        var count = 0

        init(slots: Int) {
            self.slots = Array(repeating: .empty, count: slots)
        }

        /// Where `high, low` is, or the empty slot where it would go.
        func position(_ high: UInt64, _ low: UInt64, hash: Int) -> Int {
            let mask = slots.count - 1
            var position = hash & mask
            while slots[position].isUsed, slots[position].high != high || slots[position].low != low {
                position = (position + 1) & mask
            }
            return position
        }
    }
}
