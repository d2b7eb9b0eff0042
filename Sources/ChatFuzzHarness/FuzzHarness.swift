// The checks behind the libFuzzer target `ChatFuzz` and the corpus replay
// tests (Tests/ChatFuzzTests): one fuzz input in, every rule of the codec,
// the request handler, the registry, the snapshot format and the journal
// checked, ChatService's crash-safety rules too, and a `FuzzFailure` naming
// the first broken rule out.
//
// An input is read by its first byte:
//
//   "{"        a snapshot file: the whole input goes to `Snapshot.load`, which
//              must throw or succeed; a loaded registry must keep the
//              registry's invariants, survive `encode` -> `load` unchanged,
//              and then replaces the running registry (a restart).
//   0x00       a script, run against a fresh registry so that it replays the
//              same way anywhere: the next byte sets max_users (1 + byte % 8),
//              the rest is records separated by 0x00, each a source-address
//              byte and a datagram; a record of the address byte alone lowers
//              max_users to 1 + byte % 8 (a reload), and one whose datagram is
//              "-" undoes that address's registration (`Registry.remove`, as
//              when a registration cannot be made durable).
//   0x01       a journal, version 2 if it starts with `Journal.header` and
//              version 1 otherwise: the rest goes to `Journal.replay` onto the
//              kept registry, which must throw or succeed, report a valid
//              length that fits and the version (none if no line is whole),
//              and leave a registry that keeps the invariants, holds exactly
//              what the model gets by applying the whole records before the
//              first bad line as facts (Model.restore), and does not change
//              when the same journal is replayed again.
//   0x02       a run of ChatService against a simulated disk, two bytes a
//              step (ServiceSimulation.swift): after every step, the snapshot
//              and journal on that disk must replay to exactly the
//              registrations and messages clients were told of, and every
//              push (JOINs basic and BATCH, ACKs per push and cumulative)
//              must carry messages already on disk.
//   0x03       bytes of a control connection (chatctl's protocol): framed in
//              uneven pieces by ControlLineReader, which must never hold a
//              line's cap or yield a line over it; every line that parses as
//              a flat JSON object or a request must encode and parse back
//              the same.
//   otherwise  one datagram from the address that byte picks, handled against
//              the registry the harness keeps across inputs (max_users 64,
//              started afresh every 4096 such inputs), so that the fuzzer can
//              fill it and reach SERVER_FULL, renames and TAKEN.
//
// Source addresses: bytes 0-159 are 10.0.0.N, 160-223 IPv6 addresses
// (2001:db8::N, and :: and ::N for every eighth), 224-255 the IPv4-mapped
// form ::ffff:10.0.0.(N-224), half of them as ChatSystem builds them (folded
// to IPv4) and half as a raw `.v6` (which the registry must key the same).
//
// After every datagram: the reply and the event equal what the protocol
// document's table gives (see Oracle.swift), the reply carries the request's
// id (or 0), is at most 512 bytes and parses back with `Response(...)`, a
// well-formed request is answered by at most 31/16 of its size (CONNECT
// answered with a name aside), and the registry holds exactly the model's
// registrations: one name per address, one address per name regardless of
// case, in the same order, found by `username(for:)` and `holder(of:)`,
// never more than max_users unless a snapshot or a reload put it there.
// Whenever the registry changes (in a script: at its end) it must also
// round-trip through a snapshot, and its registrations written as a journal
// must replay to the same registry, onto an empty one and onto itself.

import ChatCore

/// The first rule an input broke, in words.
public struct FuzzFailure: Error, CustomStringConvertible {
    public let description: String
}

/// How many inputs reached each outcome, so tests can tell that a corpus
/// exercises what it should.
public struct FuzzStatistics: Sendable {
    public var events: [String: Int] = [:]
    public var snapshotsLoaded = 0
    public var snapshotsRefused = 0
    public var scripts = 0
    public var removals = 0
    public var journalsReplayed = 0
    public var journalsRefused = 0
    public var serviceSimulations = 0
    public var controlRequests = 0
    public var controlLinesTooLong = 0
}

public struct FuzzHarness {
    /// max_users of the registry kept across single-datagram inputs.
    public static let maxUsers = 64
    /// Single-datagram inputs after which that registry starts afresh.
    public static let resetInterval = 4096
    /// max_users a fuzzed snapshot is loaded with: small, so that loaded
    /// registries are often over the limit, as after lowering max_users.
    public static let snapshotMaxUsers = 16

    private var registry = Registry(maxUsers: FuzzHarness.maxUsers)
    private var model = Model(maxUsers: FuzzHarness.maxUsers)
    /// Whether the registry may hold more than max_users (a snapshot or a
    /// reload put it there).
    private var overLimitAllowed = false
    private var inputsSinceReset = 0
    private var inputsSinceFullCheck = 0
    public private(set) var statistics = FuzzStatistics()

    public init() {}

    /// Runs one fuzz input (see the top of this file).
    public mutating func run(_ input: UnsafeRawBufferPointer) throws(FuzzFailure) {
        guard let first = input.first else { return }
        switch first {
        case UInt8(ascii: "{"):
            try loadSnapshot(input)
        case 0:
            try runScript(UnsafeRawBufferPointer(rebasing: input.dropFirst()))
        case 1:
            try replayJournal(Array(input.dropFirst()))
        case 2:
            statistics.serviceSimulations += 1
            var simulation = ServiceSimulation()
            try simulation.run(UnsafeRawBufferPointer(rebasing: input.dropFirst()))
        case 3:
            try readControlLines(UnsafeRawBufferPointer(rebasing: input.dropFirst()))
        default:
            inputsSinceReset += 1
            if inputsSinceReset > Self.resetInterval { reset(maxUsers: Self.maxUsers) }
            try handle(UnsafeRawBufferPointer(rebasing: input.dropFirst()), from: Self.address(first))
        }
    }

    public mutating func run(_ input: [UInt8]) throws(FuzzFailure) {
        let failure = input.withUnsafeBytes { bytes -> FuzzFailure? in
            do throws(FuzzFailure) {
                try run(bytes)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    /// Control connection bytes: framed by ControlLineReader, each line
    /// parsed as a request; what parses must encode and parse back the same,
    /// and any line that is a flat object must survive its own round trip.
    private mutating func readControlLines(_ bytes: UnsafeRawBufferPointer) throws(FuzzFailure) {
        var reader = ControlLineReader()
        // Fed in uneven pieces, as a socket delivers them.
        var offset = 0
        var piece = 1
        while offset < bytes.count {
            let end = min(bytes.count, offset + min(piece, reader.room == 0 ? 1 : reader.room))
            reader.append(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
            piece = piece * 3 % 97 + 1
            while let line = reader.nextLine() {
                guard case .line(let text) = line else {
                    statistics.controlLinesTooLong += 1
                    return  // chatd closes the connection here
                }
                guard text.count < ControlLineReader.maxLineLength, !text.contains(0x0a) else {
                    throw FuzzFailure(description: "control: a line of \(text.count) bytes, or with a newline, came out of the reader")
                }
                if let object = ControlObject(parsing: text), ControlObject(parsing: object.line.dropLast()) != object {
                    throw FuzzFailure(description: "control: \(object.fields) does not survive its own line")
                }
                if let request = try? ControlRequest(parsing: text) {
                    statistics.controlRequests += 1
                    guard (try? ControlRequest(parsing: request.object.line.dropLast())) == request else {
                        throw FuzzFailure(description: "control: \(request) does not survive its own line")
                    }
                }
            }
            if reader.pending >= ControlLineReader.maxLineLength {
                throw FuzzFailure(description: "control: the reader holds \(reader.pending) bytes without a line")
            }
        }
    }

    private mutating func reset(maxUsers: Int) {
        registry = Registry(maxUsers: maxUsers)
        model = Model(maxUsers: maxUsers)
        overLimitAllowed = false
        inputsSinceReset = 0
    }

    /// The source address a byte picks.
    static func address(_ byte: UInt8) -> IPAddress {
        switch byte {
        case 0..<160:
            return .v4(0x0a00_0000 | UInt32(byte))
        case 160..<224:
            let high: UInt64 = byte % 8 == 0 ? 0 : 0x2001_0db8_0000_0000
            return .v6(high: high, low: UInt64(byte % 8 == 0 ? byte / 8 - 20 : byte))
        default:
            let mapped: UInt64 = 0xffff_0a00_0000 | UInt64(byte - 224)
            return byte % 2 == 0 ? .v6(high: 0, low: mapped) : .ipv6(high: 0, low: mapped)
        }
    }

    // MARK: - Scripts

    private mutating func runScript(_ script: UnsafeRawBufferPointer) throws(FuzzFailure) {
        guard let limit = script.first else { return }
        statistics.scripts += 1
        let saved = (registry, model, overLimitAllowed, inputsSinceReset)
        reset(maxUsers: 1 + Int(limit % 8))
        defer { (registry, model, overLimitAllowed, inputsSinceReset) = saved }
        for record in script.dropFirst().split(separator: 0, omittingEmptySubsequences: true) {
            let datagram = UnsafeRawBufferPointer(rebasing: record.dropFirst())
            if datagram.isEmpty {
                registry.maxUsers = 1 + Int(record.first! % 8)
                model.maxUsers = registry.maxUsers
                overLimitAllowed = overLimitAllowed || registry.count > registry.maxUsers
            } else if datagram.elementsEqual("-".utf8) {
                try remove(Self.address(record.first!), context: datagram)
            } else {
                try handle(datagram, from: Self.address(record.first!), roundTrip: false)
            }
        }
        // Once per script rather than after every change: the round trips
        // cost more than everything else together.
        try checkRoundTrip(registry, context: script)
    }

    // MARK: - Datagrams

    private mutating func handle(_ datagram: UnsafeRawBufferPointer, from address: IPAddress, roundTrip: Bool = true)
        throws(FuzzFailure)
    {
        do {
            try check(datagram, from: address, roundTrip: roundTrip)
        } catch {
            throw FuzzFailure(description: "from \(address): \(error)")
        }
    }

    private mutating func check(_ datagram: UnsafeRawBufferPointer, from address: IPAddress, roundTrip: Bool)
        throws(FuzzFailure)
    {
        let key = ClientKey(address)
        let expectation = Expectation.classify(datagram)
        if case .introduce(_, let name) = expectation, Username(name) == nil {
            throw fail("the protocol's rule accepts the name \(name), Username does not", datagram)
        }
        let countBefore = registry.count
        let result = RequestHandler.handle(datagram, from: address, registry: &registry)
        let (reply, event) = model.apply(expectation, from: key)
        statistics.events[Self.name(of: event), default: 0] += 1

        guard result.reply == reply else {
            throw fail("reply \(describe(result.reply)), the protocol gives \(describe(reply)) (\(expectation))", datagram)
        }
        guard result.event == event else {
            throw fail("event \(result.event), the protocol gives \(event)", datagram)
        }
        if let reply {
            try checkReply(reply, to: datagram, event: event)
        }
        if case .registered = event, countBefore >= registry.maxUsers {
            throw fail("registered a new address with \(countBefore) of \(registry.maxUsers) users", datagram)
        }
        // The whole registry after a change and every 64th datagram; in
        // between, the address that spoke (a full scan costs more than the rest).
        inputsSinceFullCheck += 1
        if event.changedRegistry || registry.count != countBefore || inputsSinceFullCheck >= 64 {
            inputsSinceFullCheck = 0
            try checkRegistry(registry, against: model, context: datagram)
        } else if registry.username(for: address)?.text != model.names[key] {
            throw fail("username(for: \(address)) is \(describe(registry.username(for: address))), the protocol gives \(model.names[key] ?? "none")", datagram)
        }
        if event.changedRegistry {
            if roundTrip { try checkRoundTrip(registry, context: datagram) }
        } else if registry.count != countBefore {
            throw fail("the registry grew but the event \(event) says nothing changed", datagram)
        }
    }

    private func checkReply(_ reply: Response, to datagram: UnsafeRawBufferPointer, event: RequestHandler.Event)
        throws(FuzzFailure)
    {
        let bytes = reply.bytes
        guard bytes.count <= maxDatagramSize else { throw fail("reply of \(bytes.count) bytes", datagram) }
        guard Response(bytes) == reply else {
            throw fail("reply \(String(decoding: bytes, as: UTF8.self)) does not parse back", datagram)
        }
        guard bytes.starts(with: "CHAT/1 \(reply.id) ".utf8) else {
            throw fail("reply \(String(decoding: bytes, as: UTF8.self)) does not echo the id as \(reply.id)", datagram)
        }
        switch event {
        case .dropped, .malformed, .unsupportedVersion, .connected:
            break  // off the grammar, or CONNECT answered with a name: not covered by 31/16
        default:
            guard bytes.count * 16 <= datagram.count * 31 else {
                throw fail("amplification: \(bytes.count) bytes answer \(datagram.count)", datagram)
            }
        }
    }

    /// A rollback: the registration of `address` is undone.
    private mutating func remove(_ address: IPAddress, context: UnsafeRawBufferPointer) throws(FuzzFailure) {
        statistics.removals += 1
        let removed = registry.remove(address)
        guard removed == model.remove(ClientKey(address)) else {
            throw fail("remove(\(address)) returned \(removed), the model \(!removed)", context)
        }
        guard registry.username(for: address) == nil else { throw fail("\(address) still holds a name", context) }
        try checkRegistry(registry, against: model, context: context)
    }

    // MARK: - Journals

    private mutating func replayJournal(_ bytes: [UInt8]) throws(FuzzFailure) {
        let context = [1] + bytes
        let outcome = Self.replay(bytes, into: &registry)
        // The model applies, as facts, every whole record up to the first
        // line that does not parse (as the version the header picks): all of
        // them, or all before the damage, the unknown type or the torn tail.
        let version2 = bytes.starts(with: Journal.header)
        let parse = version2 ? Journal.parse : Journal.parseVersion1
        var applied = 0
        var start = version2 ? Journal.header.count : 0
        while let end = bytes[start...].firstIndex(of: 0x0a), let record = parse(bytes[start..<end]) {
            switch record {
            case .registration(let address, let name): model.restore(ClientKey(address), name: name.text)
            case .message: break  // the room's, not the registry's
            case .removal(let address): _ = model.remove(ClientKey(address))
            }
            applied += 1
            start = end + 1
        }
        switch outcome {
        case .success(let replay):
            statistics.journalsReplayed += 1
            guard replay.lines == applied else {
                throw fail("replayed \(replay.lines) lines of \(applied) whole ones", context)
            }
            guard replay.tornTail ? replay.validLength < bytes.count : replay.validLength == bytes.count else {
                throw fail("valid length \(replay.validLength) of \(bytes.count) bytes, torn tail \(replay.tornTail)", context)
            }
            let version = version2 ? 2 : applied > 0 ? 1 : nil
            guard replay.version == version else {
                throw fail("read as version \(replay.version.map(String.init) ?? "none"), not \(version.map(String.init) ?? "none")", context)
            }
        case .failure(let error):
            statistics.journalsRefused += 1
            guard !error.description.isEmpty else { throw fail("a refused journal with an empty reason", context) }
        }
        overLimitAllowed = overLimitAllowed || registry.count > registry.maxUsers
        try checkRegistry(registry, against: model, context: context)
        // Lines are facts, so applying the same run twice leaves every address
        // with the same name (what makes compaction crash-safe), whether it
        // ended in damage or not; only the registration order may change.
        var again = registry
        guard Self.replay(bytes, into: &again) == outcome, Self.mapping(again) == Self.mapping(registry) else {
            throw fail("replaying a journal a second time changed the registry", context)
        }
        try checkRoundTrip(registry, context: context)
    }

    private static func replay(_ bytes: [UInt8], into registry: inout Registry) -> Result<Journal.Replay, Journal.DamageError> {
        do throws(Journal.DamageError) {
            return .success(try Journal.replay(bytes, into: &registry))
        } catch {
            return .failure(error)
        }
    }

    private static func mapping(_ registry: Registry) -> [ClientKey: String] {
        Dictionary(uniqueKeysWithValues: registry.entries.map { (ClientKey($0.address), $0.username.text) })
    }

    // MARK: - Snapshots

    private mutating func loadSnapshot(_ input: UnsafeRawBufferPointer) throws(FuzzFailure) {
        let loaded: Registry
        do {
            loaded = try Snapshot.load(Array(input), maxUsers: Self.snapshotMaxUsers)
        } catch {
            statistics.snapshotsRefused += 1
            guard !error.description.isEmpty else { throw fail("a refused snapshot with an empty reason", input) }
            return
        }
        statistics.snapshotsLoaded += 1
        var adopted = Model(maxUsers: Self.snapshotMaxUsers)
        for entry in loaded.entries {
            guard adopted.adopt(ClientKey(entry.address), name: entry.username.text) else {
                throw fail("loaded a duplicate: \(entry.address) \(entry.username)", input)
            }
        }
        // A snapshot loads in full, even over max_users: the registry it
        // replaces may be over the limit from then on.
        registry = loaded
        model = adopted
        overLimitAllowed = loaded.count > loaded.maxUsers
        inputsSinceReset = 0
        try checkRegistry(loaded, against: adopted, context: input)
        try checkRoundTrip(loaded, context: input)
    }

    /// encode -> load gives the same registrations in the same order, and
    /// encoding that again gives the same bytes.
    private func checkRoundTrip(_ registry: Registry, context: some Collection<UInt8>) throws(FuzzFailure) {
        let bytes = Snapshot.encode(registry, savedAt: 1_795_773_601)
        let reloaded: Registry
        do {
            reloaded = try Snapshot.load(bytes, maxUsers: registry.maxUsers)
        } catch {
            throw fail("the snapshot of the registry does not load: \(error)", context)
        }
        guard reloaded.entries.elementsEqual(registry.entries, by: { $0.address == $1.address && $0.username.text == $1.username.text })
        else {
            throw fail("the snapshot does not round-trip", context)
        }
        guard Snapshot.encode(reloaded, savedAt: 1_795_773_601) == bytes else {
            throw fail("re-encoding a loaded snapshot changes it", context)
        }
        // The registrations as journal lines replay to the same registry onto
        // an empty one (whatever its max_users), and change nothing when
        // replayed onto the registry that already holds them.
        var journal = Journal.header
        for entry in registry.entries { journal += Journal.line(.registration(entry.address, entry.username)) }
        var fromEmpty = Registry(maxUsers: 1)
        var again = registry
        let replay: Journal.Replay
        do {
            replay = try Journal.replay(journal, into: &fromEmpty)
            _ = try Journal.replay(journal, into: &again)
        } catch {
            throw fail("a journal of the registry does not replay: \(error)", context)
        }
        guard replay.lines == registry.count, !replay.tornTail, replay.validLength == journal.count, replay.version == 2
        else {
            throw fail("a journal of \(registry.count) lines replays as \(replay)", context)
        }
        let same: ((address: IPAddress, username: Username), (address: IPAddress, username: Username)) -> Bool = {
            $0.address == $1.address && $0.username.text == $1.username.text
        }
        guard fromEmpty.entries.elementsEqual(registry.entries, by: same) else {
            throw fail("a journal of the registry replays to another registry", context)
        }
        guard again.entries.elementsEqual(registry.entries, by: same) else {
            throw fail("replaying the registry's own journal onto it changes it", context)
        }
    }

    // MARK: - Invariants

    private func checkRegistry(_ registry: Registry, against model: Model, context: some Collection<UInt8>)
        throws(FuzzFailure)
    {
        guard registry.count == model.count, registry.entries.count == model.count else {
            throw fail("\(registry.count) users, the protocol gives \(model.count)", context)
        }
        if !overLimitAllowed, registry.count > registry.maxUsers {
            throw fail("\(registry.count) users over max_users \(registry.maxUsers)", context)
        }
        var addresses = Set<ClientKey>()
        var names = Set<String>()
        for (index, entry) in registry.entries.enumerated() {
            let key = ClientKey(entry.address)
            let text = entry.username.text
            guard addresses.insert(key).inserted else { throw fail("address \(entry.address) holds two names", context) }
            guard names.insert(Model.fold(text)).inserted else { throw fail("two addresses hold \(text)", context) }
            guard key == model.order[index], model.names[key] == text else {
                throw fail("user \(index) is \(entry.address) \(text), the protocol gives \(model.order[index]) \(model.names[model.order[index]] ?? "-")", context)
            }
            guard registry.username(for: entry.address)?.text == text else {
                throw fail("username(for: \(entry.address)) is \(String(describing: registry.username(for: entry.address))), not \(text)", context)
            }
            let mapped = IPAddress.v6(high: key.high, low: key.low)
            guard registry.username(for: mapped)?.text == text else {
                throw fail("username(for:) of the raw IPv6 form of \(entry.address) misses \(text)", context)
            }
            guard ClientKey(registry.holder(of: entry.username) ?? .anyIPv6) == key,
                let swapped = Username(String(decoding: text.utf8.map { Self.swapCase($0) }, as: UTF8.self)),
                ClientKey(registry.holder(of: swapped) ?? .anyIPv6) == key
            else {
                throw fail("holder(of: \(text)) is not \(entry.address) in every case", context)
            }
        }
    }

    private static func swapCase(_ byte: UInt8) -> UInt8 {
        (65...90).contains(byte) || (97...122).contains(byte) ? byte ^ 0x20 : byte
    }

    // MARK: - Reporting

    private func fail(_ problem: String, _ input: some Collection<UInt8>) -> FuzzFailure {
        let shown = input.prefix(80).map { (32..<127).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }
        return FuzzFailure(description: "\(problem); input \"\(shown.joined())\"\(input.count > 80 ? "…" : "")")
    }

    private func describe(_ reply: Response?) -> String {
        reply.map { String(decoding: $0.bytes, as: UTF8.self) } ?? "none"
    }

    private func describe(_ name: Username?) -> String { name?.text ?? "none" }

    private static func name(of event: RequestHandler.Event) -> String {
        switch event {
        case .dropped: "dropped"
        case .malformed: "malformed"
        case .unsupportedVersion: "unsupportedVersion"
        case .connected: "connected"
        case .notFound: "notFound"
        case .registered: "registered"
        case .renamed: "renamed"
        case .reintroduced: "reintroduced"
        case .invalidUsername: "invalidUsername"
        case .taken: "taken"
        case .full: "full"
        }
    }
}
