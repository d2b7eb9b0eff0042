// Property tests of ChatCore (swift-property-based): the codec, usernames and
// addresses round-trip for any valid value, and the registry keeps its
// invariants under any sequence of introductions (and rollbacks) from any
// addresses, through snapshots and the journal too. Example-based tests live in
// Tests/ChatCoreTests; these state the rules for all inputs and let the
// library search for, and shrink, a counterexample. A failure prints the
// input and a `.fixedSeed(...)` trait that reproduces it. Each property runs
// a few hundred cases, so the suite takes about a second.

import ChatCore
import PropertyBased
import Testing

// MARK: - Generators

private let alphanumerics = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
private let nameCharacters = alphanumerics + ["_", ".", "-"]
private let tokenCharacters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")

private func character(of characters: [Character]) -> Generator<Character, Shrink.None<Character?>> {
    Gen<Character?>.element(of: characters).map { $0! }
}

/// Any text the username rule accepts: 1 to 32 characters, the first a letter or digit.
private let usernameText = zip(character(of: alphanumerics), character(of: nameCharacters).string(of: 0...31))
    .map { first, rest in String(first) + rest }

private let username = usernameText.map { Username($0)! }

/// Ids with the edges (0, the largest, short ones) as likely as the rest.
private let requestID = zip(Gen.int(in: 0...3), Gen.uint32()).map { kind, value -> UInt32 in
    switch kind {
    case 0: 0
    case 1: .max
    case 2: value % 100
    default: value
    }
}

private let token = character(of: tokenCharacters).string(of: 1...24)

private let request = zip(Gen.bool, requestID, username).map { isConnect, id, name -> Request in
    isConnect ? .connect(id: id) : .introduce(id: id, username: name)
}

private let knownReasons: [ErrorReason] = [
    .clientNotFound, .invalidUsername, .malformed, .unsupportedVersion, .serverFull, .unavailable,
]

private let response = zip(Gen.int(in: 0...2), requestID, username, Gen.int(in: 0...5), token, token.optional)
    .map { kind, id, name, reasonIndex, reasonToken, detail -> Response in
        switch kind {
        case 0: .success(id: id, username: name)
        case 1: .error(id: id, reason: knownReasons[reasonIndex], detail: detail)
        default: .error(id: id, reason: ErrorReason(rawValue: reasonToken), detail: detail)
        }
    }

/// IPv6 addresses with runs of zero groups, so that "::" compression is
/// exercised: each bit of `zeros` clears one of the eight groups.
private let ipv6 = zip(Gen.uint16().array(of: 8), Gen.uint8()).map { groups, zeros -> IPAddress in
    var high: UInt64 = 0
    var low: UInt64 = 0
    for (index, group) in groups.enumerated() {
        let value = UInt64(zeros >> UInt8(index) & 1 == 1 ? 0 : group)
        if index < 4 { high = high << 16 | value } else { low = low << 16 | value }
    }
    return IPAddress.ipv6(high: high, low: low)
}

private let ipv4 = Gen.uint32().map { IPAddress.v4($0) }

// MARK: - Codec

@Suite struct CodecProperties {
    @Test func requestsRoundTrip() async {
        await propertyCheck(count: 300, input: request) { request in
            let bytes = request.bytes
            #expect(bytes.count <= maxDatagramSize)
            #expect(RequestParse(bytes) == .request(request))
            #expect(RequestParse(bytes + Array("\n".utf8)) == .request(request))
            #expect(RequestParse(bytes + Array("\r\n".utf8)) == .request(request))
            #expect(String(decoding: bytes, as: UTF8.self).hasPrefix("CHAT/1 \(request.id) "))
        }
    }

    @Test func responsesRoundTrip() async {
        await propertyCheck(count: 300, input: response) { response in
            let bytes = response.bytes
            #expect(bytes.count <= maxDatagramSize)
            #expect(Response(bytes) == response)
            #expect(Response(bytes + Array("\r\n".utf8)) == response)
            #expect(String(decoding: bytes, as: UTF8.self).hasPrefix("CHAT/1 \(response.id) "))
        }
    }

    /// The server answers every request with its id, whatever the registry holds.
    @Test func repliesCarryTheRequestID() async {
        await propertyCheck(count: 300, input: request, Gen.bool) { request, known in
            var registry = Registry(maxUsers: 4)
            if known { _ = registry.introduce(Username("someone")!, from: .loopbackIPv4) }
            let result = RequestHandler.handle(request.bytes, from: .loopbackIPv4, registry: &registry)
            #expect(result.reply?.id == request.id)
        }
    }

    /// Anything after "CHAT/1 " that is not a request gets an error, never a crash or silence.
    @Test func anyTextAfterTheMagicIsAnswered() async {
        await propertyCheck(count: 300, input: Gen.ascii.string(of: 0...40)) { text in
            var registry = Registry(maxUsers: 4)
            let datagram = Array("CHAT/1 \(text)".utf8)
            let result = RequestHandler.handle(datagram, from: .loopbackIPv4, registry: &registry)
            #expect(result.reply != nil)
            #expect(result.reply.map { Response($0.bytes) == $0 } ?? false)
        }
    }
}

// MARK: - Usernames and addresses

@Suite struct UsernameAndAddressProperties {
    @Test func usernameTextRoundTrips() async {
        await propertyCheck(count: 300, input: usernameText) { text in
            #expect(Username(text)?.text == text)
            #expect(Username(bytes: Array(text.utf8))?.text == text)
            let swapped = String(text.map { $0.isUppercase ? Character($0.lowercased()) : Character($0.uppercased()) })
            #expect(Username(swapped)?.matches(Username(text)!) == true)
            #expect(Username(text)?.folded == text.lowercased())
        }
    }

    /// Username accepts exactly what the rule in docs/PROTOCOL.md describes.
    @Test func usernameRuleIsTheDocumentedOne() async {
        await propertyCheck(count: 500, input: Gen.ascii.string(of: 0...40)) { text in
            let bytes = Array(text.utf8)
            let documented =
                (1...32).contains(bytes.count) && alphanumerics.contains(Character(UnicodeScalar(bytes[0])))
                && text.allSatisfy { nameCharacters.contains($0) }
            #expect((Username(text) != nil) == documented)
            #expect((Username(bytes: bytes) != nil) == documented)
        }
    }

    @Test func ipv4DescriptionRoundTrips() async {
        await propertyCheck(count: 300, input: ipv4) { address in
            #expect(IPAddress(address.description) == address)
            #expect(IPAddress("::ffff:\(address)") == address)
            #expect(IPAddress.ipv6(bytes: address.ipv6Bytes) == address)
        }
    }

    @Test func ipv6DescriptionRoundTrips() async {
        await propertyCheck(count: 300, input: ipv6) { address in
            let text = address.description
            #expect(IPAddress(text) == address)
            #expect(IPAddress(text.uppercased()) == address)
            #expect(IPAddress.ipv6(bytes: address.ipv6Bytes) == address)
            if !address.isIPv4 {
                // RFC 5952: lowercase, at most one "::", no leading zeros in a group.
                #expect(text == text.lowercased())
                #expect(text.components(separatedBy: "::").count <= 2)
                #expect(!text.split(separator: ":").contains { $0.count > 1 && $0.hasPrefix("0") })
            }
        }
    }
}

// MARK: - Registry

/// One step of a registry's life: an introduction, or (about one step in
/// eight) the rollback of an address's registration.
private struct Step: CustomStringConvertible {
    var address: Int
    var name: Int
    var caseBits: UInt32
    var isRemoval: Bool

    var description: String { isRemoval ? "remove #\(address)" : "#\(address) introduces \(text)" }

    static let names = [
        "alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
        "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "x.y-z_0",
    ]

    /// The name in the spelling `caseBits` picks: the same name to the
    /// registry however it is spelled.
    var text: String {
        String(Self.names[name].enumerated().map { index, character in
            caseBits >> UInt32(index % 32) & 1 == 1 ? Character(character.uppercased()) : character
        })
    }
}

private let step = zip(Gen.int(in: 0..<40), Gen.int(in: 0..<Step.names.count), Gen.uint32(), Gen.int(in: 0..<8))
    .map { address, name, caseBits, kind in Step(address: address, name: name, caseBits: caseBits, isRemoval: kind == 0) }

/// Forty clients: IPv4, IPv6, and the IPv4-mapped forms of the first ten
/// IPv4 ones (as ChatSystem builds them, folded, and as a raw `.v6`), which
/// must count as the same clients.
private func client(_ index: Int) -> IPAddress {
    switch index {
    case 0..<15: .v4(0x0a00_0000 | UInt32(index))
    case 15..<30: .v6(high: 0x2001_0db8_0000_0000, low: UInt64(index))
    case 30..<35: .ipv6(high: 0, low: 0xffff_0a00_0000 | UInt64(index - 30))
    default: .v6(high: 0, low: 0xffff_0a00_0000 | UInt64(index - 35 + 5))
    }
}

/// The client key the protocol defines: an IPv4-mapped address is its IPv4 address.
private func key(_ address: IPAddress) -> IPAddress {
    IPAddress.ipv6(bytes: address.ipv6Bytes)
}

private func fold(_ text: String) -> String { text.lowercased() }

/// The registry as plain Dictionaries, following docs/PROTOCOL.md.
private struct Model {
    var maxUsers: Int
    var names: [IPAddress: String] = [:]
    var holders: [String: IPAddress] = [:]
    var order: [IPAddress] = []

    mutating func introduce(_ text: String, from address: IPAddress) -> Registry.Outcome {
        let address = key(address)
        if let holder = holders[fold(text)] {
            guard holder == address else { return .taken }
            let previous = names[address]!
            names[address] = text
            return .unchanged(previous: Username(previous)!)
        }
        if let previous = names[address] {
            holders[fold(previous)] = nil
            holders[fold(text)] = address
            names[address] = text
            return .renamed(previous: Username(previous)!)
        }
        guard order.count < maxUsers else { return .full }
        names[address] = text
        holders[fold(text)] = address
        order.append(address)
        return .registered
    }

    /// A rollback: the last registration moves into the hole.
    mutating func remove(_ address: IPAddress) -> Bool {
        let address = key(address)
        guard let name = names.removeValue(forKey: address), let index = order.firstIndex(of: address) else {
            return false
        }
        holders[fold(name)] = nil
        order[index] = order[order.count - 1]
        order.removeLast()
        return true
    }
}

/// The registry holds exactly the model's registrations, in the same order,
/// and keeps its invariants: one name per address, one address per name
/// regardless of case.
private func expectSame(_ registry: Registry, _ model: Model, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(registry.count == model.order.count, sourceLocation: sourceLocation)
    let entries = Array(registry.entries)
    #expect(entries.map(\.address) == model.order, sourceLocation: sourceLocation)
    #expect(Set(entries.map(\.address)).count == entries.count, "an address holds two names", sourceLocation: sourceLocation)
    #expect(Set(entries.map { fold($0.username.text) }).count == entries.count, "a name is held twice", sourceLocation: sourceLocation)
    for entry in entries {
        #expect(model.names[entry.address] == entry.username.text, sourceLocation: sourceLocation)
        #expect(registry.username(for: entry.address) == entry.username, sourceLocation: sourceLocation)
        #expect(registry.holder(of: entry.username) == entry.address, sourceLocation: sourceLocation)
        #expect(registry.holder(of: Username(entry.username.text.uppercased())!) == entry.address, sourceLocation: sourceLocation)
    }
}

private func mapping(_ registry: Registry) -> [IPAddress: String] {
    Dictionary(uniqueKeysWithValues: registry.entries.map { ($0.address, $0.username.text) })
}

@Suite struct RegistryProperties {
    @Test func introductionsKeepTheInvariants() async {
        await propertyCheck(count: 300, input: step.array(of: 0...120), Gen.int(in: 1...24)) { steps, maxUsers in
            var registry = Registry(maxUsers: maxUsers)
            var model = Model(maxUsers: maxUsers)
            for step in steps {
                let address = client(step.address)
                if step.isRemoval {
                    #expect(registry.remove(address) == model.remove(address), "\(step)")
                } else {
                    let name = Username(step.text)!
                    #expect(registry.introduce(name, from: address) == model.introduce(step.text, from: address), "\(step)")
                }
                #expect(registry.count <= maxUsers)
                #expect(registry.username(for: address)?.text == model.names[key(address)])
            }
            expectSame(registry, model)
        }
    }

    @Test func snapshotsRoundTrip() async {
        await propertyCheck(count: 200, input: step.array(of: 0...120), Gen.int(in: 1...24), Gen.int(in: 1...24)) {
            steps, maxUsers, loadLimit in
            var registry = Registry(maxUsers: maxUsers)
            var model = Model(maxUsers: maxUsers)
            for step in steps where !step.isRemoval {
                _ = registry.introduce(Username(step.text)!, from: client(step.address))
                _ = model.introduce(step.text, from: client(step.address))
            }
            let bytes = Snapshot.encode(registry, savedAt: 1_795_773_601)
            // A snapshot loads in full even over the limit it is loaded with.
            let loaded = try Snapshot.load(bytes, maxUsers: loadLimit)
            expectSame(loaded, model)
            #expect(Snapshot.encode(loaded, savedAt: 1_795_773_601) == bytes)
            let rebuilt = try Registry(entries: registry.entries, maxUsers: maxUsers)
            expectSame(rebuilt, model)
        }
    }

    /// The journal's promise (Journal.swift): replaying any run of the
    /// history onto a snapshot that already includes its start ends in the
    /// same state, so a crash between writing a snapshot and compacting the
    /// journal loses nothing. History: one record per change, as chatd writes.
    @Test func journalReplayFromAnySnapshotReachesTheSameState() async {
        await propertyCheck(
            count: 200, input: step.array(of: 0...80), Gen.int(in: 1...24), Gen.int(in: 0...100), Gen.int(in: 0...100)
        ) { steps, maxUsers, snapshotPick, startPick in
            var registry = Registry(maxUsers: maxUsers)
            var lines: [[UInt8]] = []
            var states = [registry]  // the registry after each line
            for step in steps where !step.isRemoval {
                let name = Username(step.text)!
                let changed =
                    switch registry.introduce(name, from: client(step.address)) {
                    case .registered, .renamed: true
                    case .unchanged(let previous): previous.text != name.text
                    case .taken, .full: false
                    }
                if changed {
                    lines.append(Journal.line(.registration(client(step.address), name)))
                    states.append(registry)
                }
            }
            let snapshot = snapshotPick % (lines.count + 1)  // lines in the snapshot
            let start = startPick % (snapshot + 1)  // lines not yet compacted away
            var restored = try Snapshot.load(Snapshot.encode(states[snapshot], savedAt: 0), maxUsers: maxUsers)
            // What compaction leaves: the header, then the lines not yet covered.
            let replay = try Journal.replay(Journal.header + lines[start...].joined(), into: &restored)
            #expect(replay.lines == lines.count - start)
            #expect(!replay.tornTail)
            #expect(mapping(restored) == mapping(registry), "snapshot after \(snapshot) of \(lines.count) lines, replay from \(start)")
        }
    }

    /// Lowering max_users evicts nobody; it only refuses new addresses.
    @Test func loweringTheLimitEvictsNobody() async {
        await propertyCheck(count: 200, input: step.array(of: 0...80), Gen.int(in: 1...10)) { steps, lowered in
            var registry = Registry(maxUsers: 40)
            var model = Model(maxUsers: 40)
            for (index, step) in steps.enumerated() {
                if index == steps.count / 2 {
                    registry.maxUsers = lowered
                    model.maxUsers = lowered
                }
                let outcome = registry.introduce(Username(step.text)!, from: client(step.address))
                #expect(outcome == model.introduce(step.text, from: client(step.address)), "\(step)")
            }
            expectSame(registry, model)
        }
    }
}
