// Usernames: the rule, and the folded key that makes uniqueness case-insensitive.
//
// A username is 1 to 32 characters of A-Z a-z 0-9 "_" "." "-", the first one a
// letter or digit. The rule is ASCII-only on purpose: no Unicode look-alikes,
// no normalisation questions, and case folding is a single byte operation.
// "Alice" and "alice" are the same name for uniqueness, but the registry keeps
// the spelling the user chose.

/// A name that satisfies the username rule. Holding one proves it was checked.
public struct Username: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let text: String

    /// The rule in words, for error messages.
    public static let rule =
        "1 to 32 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"
    public static let maxLength = 32

    public init?(_ text: String) {
        guard Self.isValid(text.utf8) else { return nil }
        self.text = text
    }

    /// Validates raw datagram bytes; the only allocation is the resulting string.
    public init?(bytes: some Collection<UInt8>) {
        guard Self.isValid(bytes) else { return nil }
        self.text = String(decoding: bytes, as: UTF8.self)
    }

    /// Bytes already known to satisfy the rule (read back from the registry).
    init(trusted bytes: UnsafeRawBufferPointer) {
        self.text = String(decoding: bytes, as: UTF8.self)
    }

    public static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        guard (1...maxLength).contains(bytes.count), let first = bytes.first,
            isLetterOrDigit(first)
        else { return false }
        return bytes.allSatisfy { isLetterOrDigit($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// The case-folded form under which names are unique.
    public var folded: String {
        String(decoding: text.utf8.map { (0x41...0x5a).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// Same name for uniqueness, whatever the case.
    public func matches(_ other: Username) -> Bool {
        text.utf8.count == other.text.utf8.count
            && zip(text.utf8, other.text.utf8).allSatisfy { $0 | 0x20 == $1 | 0x20 || $0 == $1 }
    }

    public var description: String { text }

    public static func < (lhs: Username, rhs: Username) -> Bool { lhs.text < rhs.text }

    private static func isLetterOrDigit(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default: false
        }
    }
}
