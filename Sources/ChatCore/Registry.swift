// The registry: which username each client IP address holds.
//
// Invariants, kept by every mutating method and checked when a snapshot is
// loaded:
//   - an IP address holds at most one username;
//   - a username, compared case-insensitively, is held by at most one address;
//   - the count never grows past `maxUsers` through `introduce` (a snapshot
//     larger than the limit still loads in full: data is never dropped).
// Two dictionaries give both directions in O(1); the folded name is the key of
// the reverse one so that "Alice" and "alice" collide.

public struct Registry: Sendable {
    private var namesByAddress: [IPAddress: Username] = [:]
    private var addressesByName: [String: IPAddress] = [:]

    /// New addresses are refused once this many are registered. Changing it
    /// never evicts anyone.
    public var maxUsers: Int

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

    public var count: Int { namesByAddress.count }
    public var isEmpty: Bool { namesByAddress.isEmpty }

    public func username(for address: IPAddress) -> Username? {
        namesByAddress[address]
    }

    public func holder(of name: Username) -> IPAddress? {
        addressesByName[name.folded]
    }

    /// Applies the INTRODUCE rules for `name` arriving from `address`.
    public mutating func introduce(_ name: Username, from address: IPAddress) -> Outcome {
        let key = name.folded
        if let holder = addressesByName[key] {
            guard holder == address else { return .taken }
            let previous = namesByAddress.updateValue(name, forKey: address)!
            return .unchanged(previous: previous)
        }
        if let previous = namesByAddress[address] {
            addressesByName.removeValue(forKey: previous.folded)
            addressesByName[key] = address
            namesByAddress[address] = name
            return .renamed(previous: previous)
        }
        guard namesByAddress.count < maxUsers else { return .full }
        namesByAddress[address] = name
        addressesByName[key] = address
        return .registered
    }

    /// Every registration, in no particular order.
    public var entries: some Collection<(address: IPAddress, username: Username)> {
        namesByAddress.lazy.map { (address: $0.key, username: $0.value) }
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
        let list = Array(entries)
        namesByAddress.reserveCapacity(list.count)
        addressesByName.reserveCapacity(list.count)
        for (index, entry) in list.enumerated() {
            guard namesByAddress.updateValue(entry.username, forKey: entry.address) == nil else {
                throw .duplicateAddress(entry.address, index: index)
            }
            guard addressesByName.updateValue(entry.address, forKey: entry.username.folded) == nil else {
                throw .duplicateUsername(entry.username, index: index)
            }
        }
    }
}
