// IP addresses as the registry keys them, and their text forms.
//
// The registry is keyed by a client's IP address, never its port. An IPv4
// address is a `UInt32` and an IPv6 address two `UInt64`s, so keys are compact
// and hash without touching the heap. An IPv4-mapped IPv6 address
// (`::ffff:a.b.c.d`) is the IPv4 address: a client reaching a dual-stack socket
// must get the same username as when it reaches an IPv4 one.
//
// Parsing and formatting are written out here rather than calling
// `inet_pton`/`inet_ntop` so that the core stays free of libc. Text output
// follows RFC 5952 (lowercase, longest run of zero groups compressed, leftmost
// on a tie, a single zero group never compressed), which is the form the
// snapshot file stores.

/// An IPv4 or IPv6 address, without a port.
public enum IPAddress: Hashable, Sendable {
    /// IPv4, in host byte order (`127.0.0.1` is `0x7f00_0001`).
    case v4(UInt32)
    /// IPv6 as two halves in host byte order, the first eight bytes in `high`.
    case v6(high: UInt64, low: UInt64)

    /// Builds an IPv6 address, folding an IPv4-mapped one to `.v4`.
    public static func ipv6(high: UInt64, low: UInt64) -> IPAddress {
        if high == 0 && low >> 32 == 0xffff {
            return .v4(UInt32(truncatingIfNeeded: low))
        }
        return .v6(high: high, low: low)
    }

    /// Builds an address from its 16 network-order bytes (as in `sin6_addr`).
    public static func ipv6(bytes: some Collection<UInt8>) -> IPAddress {
        precondition(bytes.count == 16, "an IPv6 address has 16 bytes")
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        return ipv6(high: high, low: low)
    }

    /// The IPv6 form as two halves in host byte order, IPv4 as
    /// `::ffff:a.b.c.d`: the one 128-bit key for an address, so an IPv4
    /// client and its mapped form can never be keyed apart. The rate limiter
    /// and the registry compute it for every datagram, so it stays a plain
    /// switch.
    public var ipv6Halves: (high: UInt64, low: UInt64) {
        switch self {
        case .v4(let v4): (0, 0xffff_0000_0000 | UInt64(v4))
        case .v6(let high, let low): (high, low)
        }
    }

    /// The 16 network-order bytes of the IPv6 form (IPv4 as `::ffff:a.b.c.d`).
    public var ipv6Bytes: [UInt8] {
        let (high, low) = ipv6Halves
        return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    public var isIPv4: Bool {
        if case .v4 = self { return true }
        return false
    }

    /// The unspecified address of each family (`0.0.0.0`, `::`).
    public static let anyIPv4 = IPAddress.v4(0)
    public static let anyIPv6 = IPAddress.v6(high: 0, low: 0)
    public static let loopbackIPv4 = IPAddress.v4(0x7f00_0001)
    public static let loopbackIPv6 = IPAddress.v6(high: 0, low: 1)
}

// MARK: - Parsing

extension IPAddress {
    /// Parses dotted-quad IPv4 (`127.0.0.5`, no leading zeros) or IPv6 text
    /// (`::1`, `2001:db8::1`, `::ffff:1.2.3.4`). Returns nil for anything else,
    /// including zone ids (`fe80::1%eth0`) and brackets.
    public init?(_ text: some StringProtocol) {
        self.init(utf8: Array(text.utf8))
    }

    /// Parses the address from its text as bytes.
    public init?(utf8 bytes: [UInt8]) {
        if let v4 = Self.parseIPv4(bytes[...]) {
            self = .v4(v4)
        } else if let (high, low) = Self.parseIPv6(bytes[...]) {
            self = .ipv6(high: high, low: low)
        } else {
            return nil
        }
    }

    private static func parseIPv4(_ text: ArraySlice<UInt8>) -> UInt32? {
        var value: UInt32 = 0
        var parts = 0
        var index = text.startIndex
        while parts < 4 {
            if parts > 0 {
                guard index < text.endIndex, text[index] == UInt8(ascii: ".") else { return nil }
                index += 1
            }
            let start = index
            var part: UInt32 = 0
            while index < text.endIndex, index - start < 3, let digit = decimalDigit(text[index]) {
                part = part * 10 + UInt32(digit)
                index += 1
            }
            let length = index - start
            guard length > 0, part <= 255, !(length > 1 && text[start] == UInt8(ascii: "0")) else {
                return nil
            }
            value = value << 8 | part
            parts += 1
        }
        return index == text.endIndex ? value : nil
    }

    private static func parseIPv6(_ text: ArraySlice<UInt8>) -> (UInt64, UInt64)? {
        // Groups before and after a "::", then an optional trailing IPv4 part.
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawGap = false
        var index = text.startIndex
        let colon = UInt8(ascii: ":")

        if text.starts(with: [colon, colon]) {
            sawGap = true
            index += 2
        } else if text.first == colon {
            return nil
        }
        while index < text.endIndex {
            // A trailing dotted quad counts as two groups.
            if let dot = text[index...].firstIndex(of: UInt8(ascii: ".")),
                !text[index..<dot].contains(colon)
            {
                guard let v4 = parseIPv4(text[index...]) else { return nil }
                let pair = [UInt16(v4 >> 16), UInt16(truncatingIfNeeded: v4)]
                if sawGap { tail += pair } else { head += pair }
                index = text.endIndex
                break
            }
            var group: UInt32 = 0
            let start = index
            while index < text.endIndex, index - start < 4, let digit = hexDigit(text[index]) {
                group = group << 4 | UInt32(digit)
                index += 1
            }
            guard index > start else { return nil }
            if sawGap { tail.append(UInt16(group)) } else { head.append(UInt16(group)) }
            if index == text.endIndex { break }
            guard text[index] == colon else { return nil }
            index += 1
            if index < text.endIndex, text[index] == colon {
                guard !sawGap else { return nil }
                sawGap = true
                index += 1
            } else if index == text.endIndex {
                return nil  // a single trailing colon
            }
        }
        let count = head.count + tail.count
        if sawGap {
            guard count <= 7 else { return nil }
        } else {
            guard count == 8 else { return nil }
        }
        let groups = head + Array(repeating: 0, count: 8 - count) + tail
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (i, group) in groups.enumerated() {
            if i < 4 { high = high << 16 | UInt64(group) } else { low = low << 16 | UInt64(group) }
        }
        return (high, low)
    }

    private static func decimalDigit(_ byte: UInt8) -> UInt8? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? byte - UInt8(ascii: "0") : nil
    }

    private static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

// MARK: - Formatting

extension IPAddress: CustomStringConvertible {
    /// Dotted quad for IPv4, RFC 5952 for IPv6.
    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
        case .v6(let high, let low):
            let groups = (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * $0)) }
                + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * $0)) }
            // The longest run of two or more zero groups, leftmost on a tie.
            var best = (start: -1, length: 1)
            var run = (start: 0, length: 0)
            for (i, group) in groups.enumerated() {
                if group == 0 {
                    if run.length == 0 { run.start = i }
                    run.length += 1
                    if run.length > best.length { best = run }
                } else {
                    run.length = 0
                }
            }
            func hex(_ slice: ArraySlice<UInt16>) -> String {
                slice.map { String($0, radix: 16) }.joined(separator: ":")
            }
            if best.start < 0 { return hex(groups[...]) }
            return hex(groups[..<best.start]) + "::" + hex(groups[(best.start + best.length)...])
        }
    }
}

/// An IP address and a UDP port: where a datagram came from or goes to.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(_ address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `127.0.0.1:7447`, `[::1]:7447`.
    public var description: String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}
