import ChatCore
import Testing

private let alice = IPAddress("127.0.0.2")!
private let bob = IPAddress("127.0.0.3")!
private let carol = IPAddress("2001:db8::3")!

/// Runs one request through the handler and returns the reply as text ("" for none).
private func send(_ text: String, from address: IPAddress, _ registry: inout Registry) -> String {
    let result = RequestHandler.handle(Array(text.utf8), from: address, registry: &registry)
    return result.reply.map { String(decoding: $0.bytes, as: UTF8.self) } ?? ""
}

@Suite struct RequestHandlerTests {
    @Test func connectUnknownThenIntroduceThenConnect() {
        var registry = Registry(maxUsers: 10)
        #expect(send("CHAT/1 1 CONNECT", from: alice, &registry) == "CHAT/1 1 ERROR CLIENT_NOT_FOUND")
        #expect(send("CHAT/1 2 INTRODUCE alice", from: alice, &registry) == "CHAT/1 2 SUCCESS alice")
        #expect(send("CHAT/1 3 CONNECT", from: alice, &registry) == "CHAT/1 3 SUCCESS alice")
        #expect(registry.count == 1)
    }

    @Test func namesAreTakenCaseInsensitively() {
        var registry = Registry(maxUsers: 10)
        _ = send("CHAT/1 1 INTRODUCE alice", from: alice, &registry)
        #expect(send("CHAT/1 2 INTRODUCE ALICE", from: bob, &registry) == "CHAT/1 2 ERROR INVALID_USERNAME TAKEN")
        #expect(send("CHAT/1 3 INTRODUCE alice", from: bob, &registry) == "CHAT/1 3 ERROR INVALID_USERNAME TAKEN")
        #expect(send("CHAT/1 4 CONNECT", from: bob, &registry) == "CHAT/1 4 ERROR CLIENT_NOT_FOUND")
        #expect(registry.username(for: alice)?.text == "alice")
    }

    @Test func reintroducingTheHeldNameSucceedsAndTakesTheNewSpelling() {
        var registry = Registry(maxUsers: 10)
        let first = RequestHandler.handle(Array("CHAT/1 1 INTRODUCE alice".utf8), from: alice, registry: &registry)
        #expect(first.event == .registered(Username("alice")!))
        let again = RequestHandler.handle(Array("CHAT/1 2 INTRODUCE alice".utf8), from: alice, registry: &registry)
        #expect(again.reply == .success(id: 2, username: Username("alice")!))
        #expect(again.event.changedRegistry == false)
        let respelled = RequestHandler.handle(Array("CHAT/1 3 INTRODUCE Alice".utf8), from: alice, registry: &registry)
        #expect(respelled.reply == .success(id: 3, username: Username("Alice")!))
        #expect(respelled.event == .reintroduced(from: Username("alice")!, to: Username("Alice")!))
        #expect(respelled.event.changedRegistry)
        #expect(send("CHAT/1 4 CONNECT", from: alice, &registry) == "CHAT/1 4 SUCCESS Alice")
        #expect(registry.count == 1)
    }

    @Test func renameFreesTheOldName() {
        var registry = Registry(maxUsers: 10)
        _ = send("CHAT/1 1 INTRODUCE alice", from: alice, &registry)
        let result = RequestHandler.handle(Array("CHAT/1 2 INTRODUCE alicia".utf8), from: alice, registry: &registry)
        #expect(result.event == .renamed(from: Username("alice")!, to: Username("alicia")!))
        #expect(result.event.changedRegistry)
        #expect(send("CHAT/1 3 INTRODUCE alice", from: bob, &registry) == "CHAT/1 3 SUCCESS alice")
        #expect(registry.username(for: alice)?.text == "alicia")
        #expect(registry.holder(of: Username("ALICE")!) == bob)
        #expect(registry.count == 2)
    }

    @Test func fullRegistryRefusesNewAddressesButNotRenames() {
        var registry = Registry(maxUsers: 2)
        _ = send("CHAT/1 1 INTRODUCE alice", from: alice, &registry)
        _ = send("CHAT/1 2 INTRODUCE bob", from: bob, &registry)
        #expect(send("CHAT/1 3 INTRODUCE carol", from: carol, &registry) == "CHAT/1 3 ERROR SERVER_FULL")
        #expect(send("CHAT/1 4 INTRODUCE robert", from: bob, &registry) == "CHAT/1 4 SUCCESS robert")
        #expect(send("CHAT/1 5 INTRODUCE alice", from: alice, &registry) == "CHAT/1 5 SUCCESS alice")
        #expect(registry.count == 2)
        registry.maxUsers = 3
        #expect(send("CHAT/1 6 INTRODUCE carol", from: carol, &registry) == "CHAT/1 6 SUCCESS carol")
        registry.maxUsers = 1  // lowering the limit evicts nobody
        #expect(registry.count == 3)
        #expect(send("CHAT/1 7 CONNECT", from: carol, &registry) == "CHAT/1 7 SUCCESS carol")
    }

    @Test func registrationIsByAddressNotPortAndMappedIPv4IsIPv4() {
        var registry = Registry(maxUsers: 10)
        _ = send("CHAT/1 1 INTRODUCE alice", from: IPAddress("::ffff:127.0.0.2")!, &registry)
        #expect(send("CHAT/1 2 CONNECT", from: alice, &registry) == "CHAT/1 2 SUCCESS alice")
        _ = send("CHAT/1 3 INTRODUCE carol", from: carol, &registry)
        #expect(send("CHAT/1 4 CONNECT", from: carol, &registry) == "CHAT/1 4 SUCCESS carol")
    }

    @Test(arguments: [
        ("CHAT/1 5 INTRODUCE -x", "CHAT/1 5 ERROR INVALID_USERNAME SYNTAX"),
        ("CHAT/1 5 INTRODUCE", "CHAT/1 5 ERROR MALFORMED"),
        ("CHAT/1 5 HELLO", "CHAT/1 5 ERROR MALFORMED"),
        ("CHAT/1 x CONNECT", "CHAT/1 0 ERROR MALFORMED"),
        ("CHAT/7 5 CONNECT", "CHAT/1 5 ERROR UNSUPPORTED_VERSION"),
        ("CHAT/", "CHAT/1 0 ERROR UNSUPPORTED_VERSION"),
        ("hello", ""),
        ("", ""),
    ])
    func badRequestsChangeNothing(text: String, expectedReply: String) {
        var registry = Registry(maxUsers: 10)
        _ = send("CHAT/1 1 INTRODUCE alice", from: alice, &registry)
        #expect(send(text, from: bob, &registry) == expectedReply)
        #expect(registry.count == 1)
        #expect(registry.username(for: bob) == nil)
    }

    @Test func randomBytesNeverChangeTheRegistry() {
        var registry = Registry(maxUsers: 10)
        _ = send("CHAT/1 1 INTRODUCE alice", from: alice, &registry)
        var generator = SplitMix64(seed: 7)
        for round in 0..<5000 {
            let length = Int(generator.next() % 80)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            // Half of the rounds start like a request so the parser goes deep.
            if round % 2 == 0 { bytes = Array("CHAT/1 9 INTRODUCE".utf8) + bytes }
            let result = RequestHandler.handle(bytes, from: bob, registry: &registry)
            if case .registered = result.event { continue }  // a random valid name may legitimately register
            #expect(result.event.changedRegistry == false)
        }
        #expect(registry.username(for: alice)?.text == "alice")
    }
}

@Suite struct RegistryTests {
    @Test func buildingFromEntriesRefusesDuplicates() throws {
        let a = Username("alice")!
        #expect(throws: Registry.ConflictError.duplicateAddress(alice, index: 1)) {
            try Registry(entries: [(alice, a), (alice, Username("other")!)], maxUsers: 10)
        }
        #expect(throws: Registry.ConflictError.duplicateUsername(Username("ALICE")!, index: 1)) {
            try Registry(entries: [(alice, a), (bob, Username("ALICE")!)], maxUsers: 10)
        }
        let registry = try Registry(entries: [(alice, a), (bob, Username("bob")!)], maxUsers: 1)
        #expect(registry.count == 2)  // over the limit still loads: data is never dropped
    }

    @Test func entriesListEveryRegistration() {
        var registry = Registry(maxUsers: 10)
        _ = registry.introduce(Username("alice")!, from: alice)
        _ = registry.introduce(Username("bob")!, from: bob)
        let listed = Dictionary(uniqueKeysWithValues: registry.entries.map { ($0.address, $0.username.text) })
        #expect(listed == [alice: "alice", bob: "bob"])
    }
}

@Suite struct RegistryModelTests {
    /// The registry against two plain dictionaries, over random introduces
    /// from a small pool of addresses and names so that renames, re-spellings
    /// and collisions are frequent; crosses chunk (4096) and table growth sizes.
    @Test(arguments: [1, 2, 3])
    func behavesLikeTheObviousModel(seed: UInt64) throws {
        var generator = SplitMix64(seed: seed)
        var registry = Registry(maxUsers: 9000)
        var names: [IPAddress: String] = [:]
        var holders: [String: IPAddress] = [:]
        let addressPool = (0..<10_000).map { i -> IPAddress in
            i % 7 == 0 ? .v6(high: 0x2001_0db8_0000_0000, low: UInt64(i)) : .v4(0x0a00_0000 + UInt32(i))
        }
        for _ in 0..<40_000 {
            let address = addressPool[Int(generator.next() % UInt64(addressPool.count))]
            let base = "user\(generator.next() % 12_000)"
            let spelled = generator.next() % 4 == 0 ? base.uppercased() : base
            let name = try #require(Username(spelled))
            let folded = spelled.lowercased()
            let outcome = registry.introduce(name, from: address)
            switch outcome {
            case .taken:
                #expect(holders[folded] != nil && holders[folded] != address)
            case .full:
                #expect(names[address] == nil && names.count == 9000)
            case .registered:
                #expect(names[address] == nil && holders[folded] == nil)
                names[address] = spelled
                holders[folded] = address
            case .renamed(let previous):
                #expect(names[address]?.lowercased() == previous.folded && previous.folded != folded)
                holders[previous.folded] = nil
                names[address] = spelled
                holders[folded] = address
            case .unchanged(let previous):
                #expect(holders[folded] == address && previous.folded == folded)
                names[address] = spelled
            }
        }
        #expect(registry.count == names.count)
        for (address, name) in names {
            #expect(registry.username(for: address)?.text == name)
            #expect(registry.holder(of: Username(name)!) == address)
        }
        #expect(registry.username(for: .v4(0x0b00_0000)) == nil)
        #expect(registry.holder(of: Username("nobody")!) == nil)
    }

    @Test func aCopyOfTheRecordsIsUnaffectedByLaterChanges() {
        var registry = Registry(maxUsers: 100_000)
        for i in 0..<10_000 { _ = registry.introduce(Username("u\(i)")!, from: .v4(UInt32(i))) }
        let saved = registry.records
        _ = registry.introduce(Username("renamed")!, from: .v4(5))
        _ = registry.introduce(Username("newcomer")!, from: .v4(99_999))
        #expect(saved.count == 10_000)
        #expect(saved[5].username.text == "u5")
        #expect(registry.records[5].username.text == "renamed")
        #expect(registry.count == 10_001)
        #expect(registry.records.last?.address == .v4(99_999))
    }

    @Test func recordsKeepRegistrationOrderAndFullLengthNames() {
        var registry = Registry(maxUsers: 10)
        let long = String(repeating: "z", count: 32)
        _ = registry.introduce(Username(long)!, from: .v4(1))
        _ = registry.introduce(Username("a")!, from: .loopbackIPv6)
        #expect(registry.records.map(\.username.text) == [long, "a"])
        #expect(registry.records.map(\.address) == [.v4(1), .loopbackIPv6])
    }
}
