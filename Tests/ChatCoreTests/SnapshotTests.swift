import ChatCore
import Testing

@Suite struct SnapshotTests {
    private func sampleRegistry() -> Registry {
        var registry = Registry(maxUsers: 10)
        _ = registry.introduce(Username("alice")!, from: IPAddress("127.0.0.5")!)
        _ = registry.introduce(Username("Bob.2")!, from: IPAddress("2001:db8::1")!)
        _ = registry.introduce(Username("carol")!, from: IPAddress("::ffff:10.0.0.1")!)
        return registry
    }

    @Test func roundTrips() throws {
        let registry = sampleRegistry()
        let bytes = Snapshot.encode(registry, savedAt: 1_795_000_000)
        let loaded = try Snapshot.load(bytes, maxUsers: 10)
        #expect(loaded.count == 3)
        for entry in registry.entries {
            #expect(loaded.username(for: entry.address) == entry.username)
        }
    }

    @Test func formatMatchesTheDocumentedShape() {
        var registry = Registry(maxUsers: 10)
        _ = registry.introduce(Username("alice")!, from: IPAddress("127.0.0.5")!)
        let text = String(decoding: Snapshot.encode(registry, savedAt: 0), as: UTF8.self)
        #expect(text == "{\"version\": 1, \"saved_at\": \"1970-01-01T00:00:00Z\", \"users\": [\n{\"ip\": \"127.0.0.5\", \"username\": \"alice\"}\n]}\n")
        let empty = String(decoding: Snapshot.encode(Registry(maxUsers: 1), savedAt: 0), as: UTF8.self)
        #expect(empty == "{\"version\": 1, \"saved_at\": \"1970-01-01T00:00:00Z\", \"users\": [\n]}\n")
    }

    /// `replacing` as CommitQueue.confirmedNames gives it: a pending
    /// registration left out, a pending rename written as on disk, and
    /// addresses a pending removal emptied written back, after the records,
    /// in address order.
    @Test func replacingWritesPendingChangesAsOnDisk() {
        var registry = Registry(maxUsers: 10)
        _ = registry.introduce(Username("alicia")!, from: .v4(1))
        _ = registry.introduce(Username("bob")!, from: .v4(2))
        let replacing: [IPAddress: Username?] = [
            .v4(1): Username("alice")!, .v4(2): nil, .v4(9): Username("zed")!, .v4(3): Username("carol")!,
            .v4(4): nil,  // registered and removed, both pending
        ]
        let text = String(decoding: Snapshot.encode(registry.records, savedAt: 0, replacing: replacing), as: UTF8.self)
        #expect(text == """
            {"version": 1, "saved_at": "1970-01-01T00:00:00Z", "users": [
            {"ip": "0.0.0.1", "username": "alice"},
            {"ip": "0.0.0.3", "username": "carol"},
            {"ip": "0.0.0.9", "username": "zed"}
            ]}

            """)
    }

    @Test func acceptsAnyWhitespaceAndKeyOrder() throws {
        let text = #"  { "users" : [ { "username":"x1", "ip":"::1" } ],"version":1 }  "#
        let registry = try Snapshot.load(Array(text.utf8), maxUsers: 10)
        #expect(registry.username(for: .loopbackIPv6)?.text == "x1")
    }

    @Test(arguments: [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[]", "line 1, column 1: the file must be a JSON object"),
        (#"{"version": 1, "users": [] "x": 1}"#, "not valid JSON at line 1, column 28: expected ',' or '}'"),
        (#"{"version": 1, "users": [{"ip": "1.2.3.4", "username": "a"}]} trailing"#, "unexpected data after the end"),
        (#"{"version": 1.5, "users": []}"#, "must be a whole number"),
        (#"{"version": 1, "users": {}}"#, "\"users\" must be an array"),
        (#"{"version": 2, "users": []}"#, "version 2 is not supported"),
        (#"{"users": []}"#, "missing key \"version\""),
        (#"{"version": 1}"#, "missing key \"users\""),
        (#"{"version": 1, "users": [{"ip": "1.2.3.4"}]}"#, "user 0: missing key \"username\""),
        (#"{"version": 1, "users": [{"ip": "1.2.3.999", "username": "a"}]}"#, "user 0: \"1.2.3.999\" is not an IP address"),
        (#"{"version": 1, "users": [{"ip": "1.2.3.4", "username": "-a"}]}"#, "user 0: \"-a\" is not a valid username"),
        (#"{"version": 1, "users": [{"ip": 5, "username": "a"}]}"#, "line 1, column 33: user 0: \"ip\" must be a string"),
        (#"{"version": 1, "users": [{"ip": "1.2.3.4", "username": "a"}, {"ip": "1.2.3.4", "username": "b"}]}"#, "user 1: address 1.2.3.4 appears twice"),
        (#"{"version": 1, "users": [{"ip": "1.2.3.4", "username": "a"}, {"ip": "1.2.3.5", "username": "A"}]}"#, "user 1: username A appears twice"),
    ])
    func refusesDamage(text: String, fragment: String) {
        #expect {
            _ = try Snapshot.load(Array(text.utf8), maxUsers: 10)
        } throws: { error in
            "\(error)".contains(fragment)
        }
    }

    @Test func errorsStayOnOneLineWhateverTheFileHolds() {
        let text = #"{"version": 1, "users": [{"ip": "1.2.3.4\n\u001b[31mFAKE", "username": "a"}]}"#
        #expect {
            _ = try Snapshot.load(Array(text.utf8), maxUsers: 10)
        } throws: { error in
            let message = "\(error)"
            return !message.contains("\n") && !message.contains("\u{1b}") && message.contains(#"1.2.3.4\u{a}\u{1b}[31mFAKE"#)
        }
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_795_773_601, "2026-11-27T10:00:01Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
        (-1, "1969-12-31T23:59:59Z"),
    ])
    func rfc3339Timestamps(seconds: Int64, text: String) {
        #expect(rfc3339(seconds) == text)
    }
}
