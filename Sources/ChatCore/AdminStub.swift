// TEMPORARY (replaced by the core branch's implementation before merge).
extension ChatService {
    public enum RemovalOutcome: Equatable, Sendable {
        case notRegistered
        case removed(Username)
        case pending(Username)
    }
    public mutating func removeRegistration(of address: IPAddress, ticket: UInt64, now: Instant) -> RemovalOutcome {
        guard let name = registry.username(for: address) else { return .notRegistered }
        registry.remove(address)
        dirty = true
        dropUnregisteredMembers()
        events.append(.removed(name, address: address, ticket: ticket))
        return .removed(name)
    }
    public mutating func requestSnapshot(ticket: UInt64) {
        events.append(.snapshotRequestFinished(ticket: ticket, report: nil, users: 0, error: "not yet"))
    }
    public var journalBytes: Int { 0 }
}
