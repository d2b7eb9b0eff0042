// CHAT/1 requests and replies as the load generator writes and reads them.
//
// ChatCore's codec builds `Request`/`Response` values and allocates a String
// per username, which is right for the server and the client but would put
// an allocation on every request of a generator that sends hundreds of
// thousands a second. So the generator writes its few request shapes straight
// into a reused buffer and reads a reply only as far as it needs: the id, to
// find the request it answers, and then a byte comparison of the rest with
// the answer it expects. Both are pure functions on raw memory, checked by
// `chatd-bench selftest` against ChatCore's own codec.

import ChatCore

enum Wire {
    static let header = Array("CHAT/1 ".utf8)
    static let connect = Array(" CONNECT".utf8)
    static let introduce = Array(" INTRODUCE ".utf8)
    static let success = Array("SUCCESS ".utf8)
    static let notFound = Array("ERROR CLIENT_NOT_FOUND".utf8)

    /// Writes `CHAT/1 <id> CONNECT`, or `CHAT/1 <id> INTRODUCE <name>` when
    /// `name` is given, at the start of `buffer` (at least 64 bytes) and
    /// returns its length.
    static func writeRequest(id: UInt32, introducing name: [UInt8]?, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var length = 0
        func put(_ bytes: [UInt8]) {
            for byte in bytes {
                buffer[length] = byte
                length += 1
            }
        }
        put(header)
        // The id in decimal, without leading zeros.
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = id
        withUnsafeMutableBytes(of: &digits) { scratch in
            repeat {
                scratch[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0
            for index in stride(from: count - 1, through: 0, by: -1) {
                buffer[length] = scratch[index]
                length += 1
            }
        }
        if let name {
            put(introduce)
            put(name)
        } else {
            put(connect)
        }
        return length
    }

    /// The id of a reply and where the part after it starts (`SUCCESS …` or
    /// `ERROR …`), or nil when the datagram is not a CHAT/1 reply header.
    static func readReplyHeader(_ reply: UnsafeRawBufferPointer) -> (id: UInt32, rest: Int)? {
        guard reply.count > header.count + 1 else { return nil }
        for index in 0..<header.count where reply[index] != header[index] { return nil }
        var index = header.count
        var value: UInt64 = 0
        while index < reply.count, index - header.count <= 10 {
            let digit = reply[index] &- UInt8(ascii: "0")
            guard digit < 10 else { break }
            value = value * 10 + UInt64(digit)
            index += 1
        }
        let digits = index - header.count
        guard (1...10).contains(digits), value <= UInt64(UInt32.max), index < reply.count,
            reply[index] == UInt8(ascii: " ")
        else { return nil }
        return (UInt32(value), index + 1)
    }

    /// Whether `reply[from...]` is exactly `first` followed by `second`.
    @inline(__always)
    static func rest(_ reply: UnsafeRawBufferPointer, from start: Int, is first: [UInt8], _ second: [UInt8] = []) -> Bool {
        guard reply.count - start == first.count + second.count else { return false }
        var index = start
        for byte in first {
            if reply[index] != byte { return false }
            index += 1
        }
        for byte in second {
            if reply[index] != byte { return false }
            index += 1
        }
        return true
    }
}

/// The source addresses of the simulated clients, and the names they register.
enum ClientAddresses {
    /// 127.1.0.1, the first address loadgen.c uses; names count from it.
    static let loadgenBase: UInt32 = 0x7f01_0001
    static let lastLoopback: UInt32 = 0x7fff_fffe

    /// `count` consecutive IPv4 addresses from `base`, or nil when they do
    /// not all lie in 127.0.0.0/8 (127.0.0.1 … 127.255.255.254).
    static func range(from base: UInt32, count: Int) -> [UInt32]? {
        guard count > 0, base >> 24 == 127, base & 0x00ff_ffff != 0,
            UInt64(base) + UInt64(count) - 1 <= UInt64(lastLoopback)
        else { return nil }
        return (0..<UInt32(count)).map { base + $0 }
    }

    /// The name a client registers: `u<n>`, where n is the address's offset
    /// from 127.1.0.1 (wrapping, so every address has its own name). With
    /// the default base these are loadgen.c's names (client i is 127.1.0.1+i
    /// and registers `u<i>`), so the two generators can take turns against
    /// one server without taking each other's names.
    static func name(for address: UInt32) -> [UInt8] {
        Array("u\(address &- loadgenBase)".utf8)
    }

    /// The second name of the `introduce` and `mixed` mixes: `u<n>b`, as loadgen.c.
    static func alternateName(for address: UInt32) -> [UInt8] {
        name(for: address) + [UInt8(ascii: "b")]
    }
}
