// Return-routability cookies: proof that a chat client receives datagrams
// at the endpoint it sends from, with no state kept per endpoint.
//
// Theory of operation
// -------------------
// A cookie is SipHash-2-4 of the endpoint (address as 16 bytes, port) under
// a secret of the current epoch. A client learns its cookie from a COOKIE
// reply sent to its endpoint, so only a client that receives there can
// quote it; a forged source address gets its COOKIE sent to the victim,
// which is at most 2.3 times the forged request (the 3× rule holds). The
// epoch's secret is derived from a random master key (SipHash of the epoch
// number), so rotating costs nothing and needs no randomness from outside
// the core. `rotate()` starts a new epoch; the previous epoch's cookies
// stay valid until the next rotation, so a client in the middle of a
// request never sees its cookie refused more than once.
//
// The check is constant work (two SipHash runs at most) and allocates
// nothing, so a flood of forged chat requests costs about what a flood of
// CONNECTs does.

public struct Cookies: Sendable {
    private let master: (UInt64, UInt64)
    public private(set) var epoch: UInt64 = 0
    private var current: (UInt64, UInt64)
    private var previous: (UInt64, UInt64)

    /// - Parameter key: 128 random bits (the shell's come from the kernel).
    public init(key: (UInt64, UInt64)) {
        master = key
        current = SipHash.keyed(master, epoch: 0)
        previous = current
    }

    /// The cookie `endpoint` must quote, under the current secret.
    public func cookie(for endpoint: Endpoint) -> UInt64 {
        Self.cookie(endpoint, key: current)
    }

    /// Whether `cookie` is `endpoint`'s under the current or the previous secret.
    public func isValid(_ cookie: UInt64, for endpoint: Endpoint) -> Bool {
        guard cookie != 0 else { return false }
        return cookie == Self.cookie(endpoint, key: current) || cookie == Self.cookie(endpoint, key: previous)
    }

    /// Starts a new epoch: cookies of the one before the current stop working.
    public mutating func rotate() {
        epoch &+= 1
        previous = current
        current = SipHash.keyed(master, epoch: epoch)
    }

    private static func cookie(_ endpoint: Endpoint, key: (UInt64, UInt64)) -> UInt64 {
        let (high, low) = endpoint.address.ipv6Halves
        let value = SipHash.hash(key: key, high, low, UInt64(endpoint.port))
        return value == 0 ? 1 : value  // 0 means "no cookie" on the wire
    }
}

/// SipHash-2-4 over whole 64-bit words (Aumasson and Bernstein), enough for
/// cookies; not a general byte-stream hash.
enum SipHash {
    static func hash(key: (UInt64, UInt64), _ w0: UInt64, _ w1: UInt64, _ w2: UInt64) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ key.0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ key.1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ key.0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ key.1
        func round() {
            v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
            v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
            v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
            v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
        }
        for word in [w0, w1, w2] {
            v3 ^= word
            round(); round()
            v0 ^= word
        }
        // The final block: the length in bytes (24) in the top byte, no tail.
        let last: UInt64 = 24 << 56
        v3 ^= last
        round(); round()
        v0 ^= last
        v2 ^= 0xff
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }

    /// The secret of `epoch`, derived from the master key.
    static func keyed(_ master: (UInt64, UInt64), epoch: UInt64) -> (UInt64, UInt64) {
        (hash(key: master, epoch, 0, 0), hash(key: master, epoch, 1, 0))
    }
}

extension UInt64 {
    fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 { self << count | self >> (64 - count) }
}
