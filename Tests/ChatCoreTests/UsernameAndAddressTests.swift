import ChatCore
import Testing

@Suite struct UsernameTests {
    @Test(arguments: ["a", "Z", "0", "alice", "Bob_2", "x.y-z", "9lives", String(repeating: "a", count: 32)])
    func valid(text: String) {
        #expect(Username(text)?.text == text)
    }

    @Test(arguments: ["", "_a", ".a", "-a", "a b", "a!", "é", "a\u{0}", String(repeating: "a", count: 33)])
    func invalid(text: String) {
        #expect(Username(text) == nil)
    }

    @Test func foldingIsASCIICaseInsensitive() {
        #expect(Username("AlIcE_.-9")!.folded == "alice_.-9")
        #expect(Username("Alice")!.matches(Username("aLICE")!))
        #expect(!Username("alice")!.matches(Username("alicf")!))
        #expect(!Username("a_")!.matches(Username("a-")!))
    }
}

@Suite struct IPAddressTests {
    @Test(arguments: [
        ("127.0.0.1", IPAddress.v4(0x7f00_0001)),
        ("0.0.0.0", .v4(0)),
        ("255.255.255.255", .v4(.max)),
        ("::", .v6(high: 0, low: 0)),
        ("::1", .v6(high: 0, low: 1)),
        ("2001:db8::1", .v6(high: 0x2001_0db8_0000_0000, low: 1)),
        ("2001:DB8:0:0:0:0:0:1", .v6(high: 0x2001_0db8_0000_0000, low: 1)),
        ("fe80::", .v6(high: 0xfe80_0000_0000_0000, low: 0)),
        ("::ffff:127.0.0.5", .v4(0x7f00_0005)),
        ("::FFFF:7f00:5", .v4(0x7f00_0005)),
        ("1:2:3:4:5:6:7:8", .v6(high: 0x0001_0002_0003_0004, low: 0x0005_0006_0007_0008)),
        ("64:ff9b::192.0.2.33", .v6(high: 0x0064_ff9b_0000_0000, low: 0xc000_0221)),
    ])
    func parses(text: String, expected: IPAddress) {
        #expect(IPAddress(text) == expected)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.4 ", "a.b.c.d", ":::", "1::2::3",
        "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", ":1", "1:", "fe80::1%eth0", "[::1]", "::1.2.3",
        "1:2:3:4:5:6:7::8",
    ])
    func rejects(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test(arguments: [
        ("127.0.0.1", "127.0.0.1"),
        ("::", "::"),
        ("::1", "::1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // leftmost of equal runs
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // a single zero group stays
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),  // the longest run wins
        ("::ffff:10.1.2.3", "10.1.2.3"),
    ])
    func formatsPerRFC5952(text: String, expected: String) {
        #expect(IPAddress(text)?.description == expected)
    }

    @Test func bytesRoundTripAndMappedFolding() {
        let v6 = IPAddress("2001:db8::42")!
        #expect(IPAddress.ipv6(bytes: v6.ipv6Bytes) == v6)
        let v4 = IPAddress("10.0.0.7")!
        #expect(v4.ipv6Bytes == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7])
        #expect(IPAddress.ipv6(bytes: v4.ipv6Bytes) == v4)
        // The registry and the rate limiter key by these halves.
        #expect(v4.ipv6Halves.high == 0 && v4.ipv6Halves.low == 0xffff_0a00_0007)
    }

    @Test func endpointsPrintWithBracketsForIPv6() {
        #expect(Endpoint(.v4(0x7f00_0001), port: 7447).description == "127.0.0.1:7447")
        #expect(Endpoint(.loopbackIPv6, port: 7447).description == "[::1]:7447")
    }
}
