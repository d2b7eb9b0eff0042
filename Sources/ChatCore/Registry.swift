// The registry: which username each client IP address holds.
//
// Invariants, kept by every mutating method and checked when a snapshot is
// loaded:
//   - an IP address holds at most one username;
//   - a username, compared case-insensitively, is held by at most one address;
//   - the count never grows past `maxUsers` through `introduce` (a snapshot
//     larger than the limit still loads in full, and `restore` replays the
//     journal past it: data is never dropped).
//
// Storage, shaped by the numbers a million users imply:
//   - `records`: one 48-byte plain record per user (address as 128 bits, name
//     as up to 32 bytes), in chunks of 4096, in registration order except
//     where a removal moved the last record into the hole it left. Plain
//     data copies as memory, and chunks are separate copy-on-write arrays, so
//     a snapshot can take `records` to another thread and the loop's next
//     change copies only the one chunk it touches.
//   - two open-addressing hash tables of UInt32 record numbers (linear
//     probing, at most half full): by address, and by case-folded name.
//     Keys live in the records, so each table costs 4 bytes a slot.
// About 64 bytes a user in all, against ~160 for two Dictionaries. Hashing
// uses the standard library's per-process random seed, so nobody can choose
// addresses or names that collide on purpose. The protocol has no way to
// leave, so a user is removed only by an administrator (chatctl remove), to
// undo a registration that could not be made durable, or when journal
// replay (`restore`) gives its name to another address. Deleting from a
// table shifts later entries back, so no tombstones are needed.

public struct Registry: Sendable {
    /// New addresses are refused once this many are registered. Changing it
    /// never evicts anyone.
    public var maxUsers: Int
    public private(set) var records = Records()
    private var byAddress = SlotTable()
    private var byName = SlotTable()

    public init(maxUsers: Int) {
        precondition(maxUsers > 0, "maxUsers must be positive")
        self.maxUsers = maxUsers
    }

    /// What `introduce` did, so the caller can answer, log and persist.
    public enum Outcome: Equatable, Sendable {
        /// A new address now holds the name.
        case registered
        /// The address held `previous` and now holds the new name instead.
        case renamed(previous: Username)
        /// The address already held this name (perhaps in another spelling,
        /// now replaced); a retransmitted INTRODUCE lands here.
        case unchanged(previous: Username)
        /// Another address holds the name.
        case taken
        /// The address is new and the registry is at `maxUsers`.
        case full
    }

    public var count: Int { records.count }
    public var isEmpty: Bool { records.count == 0 }

    public func username(for address: IPAddress) -> Username? {
        let key = address.ipv6Halves
        return findAddress(key, hash: Record.hash(key)).map { records[$0].username }
    }

    public func holder(of name: Username) -> IPAddress? {
        findName(name, hash: Record.hash(name: name)).map { records[$0].address }
    }

    /// Applies the INTRODUCE rules for `name` arriving from `address`.
    public mutating func introduce(_ name: Username, from address: IPAddress) -> Outcome {
        let key = address.ipv6Halves
        let nameHash = Record.hash(name: name)
        if let holder = findName(name, hash: nameHash) {
            guard records[holder].matches(key) else { return .taken }
            let previous = records[holder].username
            records[holder].setName(name)  // same folded name: the slot stays right
            return .unchanged(previous: previous)
        }
        let addressHash = Record.hash(key)
        if let index = findAddress(key, hash: addressHash) {
            let previous = records[index].username
            byName.remove(index, hash: records[index].nameHash) { records[$0].nameHash }
            records[index].setName(name)
            byName.insert(index, hash: nameHash)
            return .renamed(previous: previous)
        }
        guard count < maxUsers else { return .full }
        append(Record(key: key, name: name), addressHash: addressHash, nameHash: nameHash)
        return .registered
    }

    /// Makes `address` hold `name` whatever the registry says now, for
    /// replaying the journal and undoing changes: those record what did
    /// happen, so neither the limit nor another holder of the name stops it.
    /// Another address holding the name loses it, and its registration: in a
    /// correct history that address takes the name later in the same replay.
    public mutating func restore(_ name: Username, at address: IPAddress) {
        if let holder = findName(name, hash: Record.hash(name: name)), !records[holder].matches(address.ipv6Halves) {
            remove(records[holder].address)
        }
        let limit = maxUsers
        maxUsers = max(limit, count + 1)
        _ = introduce(name, from: address)
        maxUsers = limit
    }

    /// Removes the registration of `address`: for an administrator, to undo
    /// a registration that could not be made durable, and in `restore`, when
    /// another address takes the name. The last record moves into the
    /// hole, so registration order is kept except for that one record.
    @discardableResult
    public mutating func remove(_ address: IPAddress) -> Bool {
        let key = address.ipv6Halves
        let addressHash = Record.hash(key)
        guard let index = findAddress(key, hash: addressHash) else { return false }
        byAddress.remove(index, hash: addressHash) { records[$0].addressHash }
        byName.remove(index, hash: records[index].nameHash) { records[$0].nameHash }
        let last = records.count - 1
        if index != last {
            let moved = records[last]
            byAddress.renumber(last, to: index, hash: moved.addressHash)
            byName.renumber(last, to: index, hash: moved.nameHash)
            records[index] = moved
        }
        records.removeLast()
        return true
    }

    /// Every registration, in registration order except where `remove`
    /// moved the last record into a hole.
    public var entries: some Collection<(address: IPAddress, username: Username)> {
        records.lazy.map { (address: $0.address, username: $0.username) }
    }

    /// The registration at `index` (0..<count) in the order of `entries`.
    public func entry(at index: Int) -> (address: IPAddress, username: Username) {
        (records[index].address, records[index].username)
    }

    /// Room for `capacity` users without growing the tables.
    public mutating func reserveCapacity(_ capacity: Int) {
        records.reserveCapacity(capacity)
        byAddress.grow(toHold: capacity) { records[$0].addressHash }
        byName.grow(toHold: capacity) { records[$0].nameHash }
    }

    // MARK: - Tables

    private func findAddress(_ key: (high: UInt64, low: UInt64), hash: Int) -> Int? {
        byAddress.find(hash: hash) { records[$0].matches(key) }
    }

    private func findName(_ name: Username, hash: Int) -> Int? {
        byName.find(hash: hash) { records[$0].nameMatches(name) }
    }

    /// Adds a record whose address and name are known to be free, with their hashes.
    private mutating func append(_ record: Record, addressHash: Int, nameHash: Int) {
        let index = records.count
        records.append(record)
        byAddress.grow(toHold: records.count) { records[$0].addressHash }
        byName.grow(toHold: records.count) { records[$0].nameHash }
        byAddress.insert(index, hash: addressHash)
        byName.insert(index, hash: nameHash)
    }
}

// MARK: - Loading

extension Registry {
    /// Why a list of registrations cannot form a registry.
    public enum ConflictError: Error, Equatable, CustomStringConvertible {
        case duplicateAddress(IPAddress, index: Int)
        case duplicateUsername(Username, index: Int)

        public var description: String {
            switch self {
            case .duplicateAddress(let address, let index):
                "user \(index): address \(address) appears twice"
            case .duplicateUsername(let name, let index):
                "user \(index): username \(name) appears twice (names are unique regardless of case)"
            }
        }
    }

    /// Builds a registry from saved registrations, refusing duplicates rather
    /// than silently keeping one of them.
    public init(
        entries: some Sequence<(address: IPAddress, username: Username)>, maxUsers: Int
    ) throws(ConflictError) {
        self.init(maxUsers: maxUsers)
        reserveCapacity(entries.underestimatedCount)
        for (index, entry) in entries.enumerated() {
            try add(entry.username, at: entry.address, index: index)
        }
    }

    /// Adds one saved registration (for loaders that stream the file).
    public mutating func add(_ name: Username, at address: IPAddress, index: Int) throws(ConflictError) {
        let key = address.ipv6Halves
        let addressHash = Record.hash(key)
        let nameHash = Record.hash(name: name)
        guard findAddress(key, hash: addressHash) == nil else { throw .duplicateAddress(address, index: index) }
        guard findName(name, hash: nameHash) == nil else { throw .duplicateUsername(name, index: index) }
        append(Record(key: key, name: name), addressHash: addressHash, nameHash: nameHash)
    }
}

// MARK: - Records

extension Registry {
    /// One registration as plain data: 48 bytes, no references.
    public struct Record: Sendable {
        /// The address's `ipv6Halves`.
        var high: UInt64
        var low: UInt64
        /// The name's bytes, zero-padded (names never contain NUL).
        var name: (UInt64, UInt64, UInt64, UInt64)

        init(key: (high: UInt64, low: UInt64), name: Username) {
            high = key.high
            low = key.low
            self.name = (0, 0, 0, 0)
            setName(name)
        }

        public var address: IPAddress { .ipv6(high: high, low: low) }

        public var username: Username {
            withNameBytes { Username(trusted: $0) }
        }

        /// Calls `body` with the name's bytes, without making a String.
        public func withNameBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
            withUnsafeBytes(of: name) { bytes in
                let length = bytes.firstIndex(of: 0) ?? bytes.count
                return body(UnsafeRawBufferPointer(rebasing: bytes[..<length]))
            }
        }

        mutating func setName(_ username: Username) {
            name = (0, 0, 0, 0)
            var text = username.text
            text.withUTF8 { source in
                withUnsafeMutableBytes(of: &name) { $0.copyMemory(from: UnsafeRawBufferPointer(source)) }
            }
        }

        func matches(_ key: (high: UInt64, low: UInt64)) -> Bool { high == key.high && low == key.low }

        /// Case-insensitive comparison with `other`, without making a String.
        func nameMatches(_ other: Username) -> Bool {
            var text = other.text
            return text.withUTF8 { wanted in
                withNameBytes { stored in
                    stored.count == wanted.count
                        && zip(stored, wanted).allSatisfy { $0 == $1 || ($0 | 0x20 == $1 | 0x20 && ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7a) }
                }
            }
        }

        var addressHash: Int { Self.hash((high: high, low: low)) }

        var nameHash: Int { withNameBytes { Self.hash(foldedBytes: $0) } }

        static func hash(_ key: (high: UInt64, low: UInt64)) -> Int {
            var hasher = Hasher()
            hasher.combine(key.high)
            hasher.combine(key.low)
            return hasher.finalize()
        }

        static func hash(name: Username) -> Int {
            var text = name.text
            return text.withUTF8 { hash(foldedBytes: UnsafeRawBufferPointer($0)) }
        }

        /// Hashes the case-folded name in one call (names are at most 32 bytes).
        static func hash(foldedBytes bytes: UnsafeRawBufferPointer) -> Int {
            var folded: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
            return withUnsafeMutableBytes(of: &folded) { buffer in
                for (index, byte) in bytes.prefix(buffer.count).enumerated() {
                    buffer[index] = (0x41...0x5a).contains(byte) ? byte | 0x20 : byte
                }
                var hasher = Hasher()
                hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: buffer[..<min(bytes.count, buffer.count)]))
                return hasher.finalize()
            }
        }
    }

    /// All records in chunks of 4096, each its own copy-on-write array.
    public struct Records: RandomAccessCollection, Sendable {
        static let chunkSize = 4096
        private var chunks: [[Record]] = []
        public private(set) var count = 0

        public var startIndex: Int { 0 }
        public var endIndex: Int { count }

        public subscript(index: Int) -> Record {
            get { chunks[index >> 12][index & 4095] }
            set { chunks[index >> 12][index & 4095] = newValue }
        }

        mutating func append(_ record: Record) {
            if count & 4095 == 0 {
                var chunk: [Record] = []
                chunk.reserveCapacity(Self.chunkSize)
                chunks.append(chunk)
            }
            chunks[chunks.count - 1].append(record)
            count += 1
        }

        mutating func removeLast() {
            chunks[chunks.count - 1].removeLast()
            if chunks[chunks.count - 1].isEmpty { chunks.removeLast() }
            count -= 1
        }

        mutating func reserveCapacity(_ capacity: Int) {
            chunks.reserveCapacity((capacity + Self.chunkSize - 1) / Self.chunkSize)
        }
    }
}

// MARK: - Open addressing

/// A hash table of record numbers with linear probing, kept at most half
/// full. Keys are not stored: callers compare through the record number.
private struct SlotTable: Sendable {
    private static let empty = UInt32.max
    private var slots: [UInt32] = []
    private var mask = 0

    func find(hash: Int, _ isMatch: (Int) -> Bool) -> Int? {
        guard !slots.isEmpty else { return nil }
        var position = hash & mask
        while true {
            let slot = slots[position]
            if slot == Self.empty { return nil }
            if isMatch(Int(slot)) { return Int(slot) }
            position = (position + 1) & mask
        }
    }

    /// Inserts a record number known to be absent.
    mutating func insert(_ index: Int, hash: Int) {
        var position = hash & mask
        while slots[position] != Self.empty { position = (position + 1) & mask }
        slots[position] = UInt32(index)
    }

    /// Points the slot holding `old` at `new` instead (after a record moved).
    mutating func renumber(_ old: Int, to new: Int, hash: Int) {
        var position = hash & mask
        while slots[position] != UInt32(old) { position = (position + 1) & mask }
        slots[position] = UInt32(new)
    }

    /// Removes `index` and shifts later entries of its cluster back, so
    /// lookups never need tombstones.
    mutating func remove(_ index: Int, hash: Int, hashOf: (Int) -> Int) {
        var position = hash & mask
        while slots[position] != UInt32(index) { position = (position + 1) & mask }
        var hole = position
        var next = (hole + 1) & mask
        while slots[next] != Self.empty {
            let home = hashOf(Int(slots[next])) & mask
            // Move the entry back if the hole lies between its home and where it sits.
            let distanceToHole = (hole - home) & mask
            let distanceToEntry = (next - home) & mask
            if distanceToHole < distanceToEntry {
                slots[hole] = slots[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        slots[hole] = Self.empty
    }

    /// Doubles (and rehashes) until `count` entries keep it at most half full.
    mutating func grow(toHold count: Int, hashOf: (Int) -> Int) {
        guard count * 2 > slots.count else { return }
        var size = max(16, slots.count)
        while count * 2 > size { size *= 2 }
        let old = slots
        slots = Array(repeating: Self.empty, count: size)
        mask = size - 1
        for slot in old where slot != Self.empty {
            insert(Int(slot), hash: hashOf(Int(slot)))
        }
    }
}
