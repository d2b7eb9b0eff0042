// Group commit for durable registrations and chat messages: which replies
// wait for which sync, and how to undo changes a failed sync could not keep.
//
// Theory of operation
// -------------------
// With durability "sync", a change to the registry is applied at once (so
// the next request sees it) but is not confirmed until its journal line is
// on disk. The server records each change here with the reply it earned and
// holds that reply; it also holds every other reply to an address with a
// change pending, since any SUCCESS it carries reflects unconfirmed state.
//
//   record(...)        change applied in memory, journal line queued, reply held
//   record(removalOf:) the same for an administrator's removal of a
//                      registration; its "reply" carries no datagram, only
//                      what to report once it is on disk
//   record(message:)   a chat message's line queued, its reply held
//   hold(...)          another reply to a pending address, held in order
//   startCommit()      the queued lines become the group in flight (one write,
//                      one fdatasync for all of them); nil if one is in flight
//   commitSucceeded()  the group is on disk: its held replies go out
//   commitFailed()     not on disk: every pending change, in flight or queued,
//                      is undone in reverse order and every held reply is
//                      returned for the caller to answer as the changes'
//                      failure demands (ChatService.commitFailed)
//
// A removal is a change like the others: its address is pending, so every
// reply to it waits, and its undo gives the name back. Undoing newest first
// keeps that sound: a later change that registered the address again, or
// took the freed name, is undone before the removal's undo restores the
// name (the other way round, undoing the re-registration would remove the
// name just given back).
//
// Changes received while a group is in flight queue for the next group, so
// one sync serves everything that arrived during the previous one. Nothing
// here does I/O; the server writes and syncs on a thread of its own.

public struct CommitQueue<Reply> {
    /// What to restore if a change cannot be kept.
    struct Undo {
        var address: IPAddress
        /// The name the address held before, or nil if it was new; never
        /// nil for a removal.
        var previous: Username?
    }

    struct Group {
        var lines: [UInt8] = []
        var undo: [Undo] = []
        var held: [Reply] = []
        var isEmpty: Bool { undo.isEmpty && held.isEmpty }
    }

    private var queued = Group()
    private var inFlight: Group?
    private var pending: [IPAddress: Int] = [:]

    public init() {}

    /// Nothing queued and nothing in flight.
    public var isEmpty: Bool { inFlight == nil && queued.isEmpty }

    /// Whether a commit is being written.
    public var isCommitting: Bool { inFlight != nil }

    /// Changes not yet confirmed, queued or in flight.
    public var pendingChanges: Int { queued.undo.count + (inFlight?.undo.count ?? 0) }

    /// What the journal on disk gives each address with a pending change:
    /// the name it held before its first pending change, or nil if it was
    /// new. A snapshot written while changes are pending writes these, so a
    /// change whose sync then fails never reaches the snapshot. Taken
    /// together the names are unique: a name freed by a pending change can
    /// only have been taken by a later change, which is pending too. An
    /// address a pending removal emptied is here with its name on disk,
    /// though the registry no longer holds it: the snapshot writes it back.
    public var confirmedNames: [IPAddress: Username?] {
        var names: [IPAddress: Username?] = [:]
        for undo in [inFlight, queued].compactMap({ $0 }).flatMap(\.undo) {
            let key = undo.address.ipv6Halves
            let address = IPAddress.ipv6(high: key.high, low: key.low)  // as the records spell it
            if names.index(forKey: address) == nil { names[address] = undo.previous }
        }
        return names
    }

    /// Whether `address` has a change not yet on disk.
    public func isPending(_ address: IPAddress) -> Bool { pending[address] != nil }

    /// Records a change already applied to the registry: `address` now holds
    /// `name` and held `previous` before (nil if it was new). `reply` waits
    /// for the commit.
    public mutating func record(address: IPAddress, name: Username, previous: Username?, reply: Reply) {
        queued.lines += Journal.line(.registration(address, name))
        queued.undo.append(Undo(address: address, previous: previous))
        pending[address, default: 0] += 1
        queued.held.append(reply)
    }

    /// Records a removal already applied to the registry: `address` held
    /// `previous` and now holds nothing. `reply` waits for the commit.
    public mutating func record(removalOf address: IPAddress, previous: Username, reply: Reply) {
        queued.lines += Journal.line(.removal(address))
        queued.undo.append(Undo(address: address, previous: previous))
        pending[address, default: 0] += 1
        queued.held.append(reply)
    }

    /// Queues a chat message's journal line; `reply` (its SUCCESS, and the
    /// message to push) waits for the commit. A message changes no
    /// registration, so nothing is undone if the sync fails: the caller
    /// takes back its seq.
    public mutating func record(message: ChatMessage, reply: Reply) {
        queued.lines += Journal.line(.message(message))
        queued.held.append(reply)
    }

    /// Holds a reply to an address with a pending change until that change is confirmed.
    public mutating func hold(_ reply: Reply) {
        queued.held.append(reply)
    }

    /// The journal bytes of the next group, which is now in flight; nil when
    /// a group is already in flight or nothing waits.
    public mutating func startCommit() -> [UInt8]? {
        guard inFlight == nil, !queued.isEmpty else { return nil }
        inFlight = queued
        queued = Group()
        return inFlight!.lines
    }

    /// The group in flight is on disk: the replies it held, in order.
    public mutating func commitSucceeded() -> [Reply] {
        guard let group = inFlight else { return [] }
        inFlight = nil
        release(group.undo.map(\.address))
        return group.held
    }

    /// The group in flight could not be written: undoes every pending change
    /// (newest first) and returns every held reply, in order.
    public mutating func commitFailed(registry: inout Registry) -> [Reply] {
        let groups = [inFlight, queued].compactMap { $0 }
        for undo in groups.flatMap(\.undo).reversed() {
            if let previous = undo.previous {
                // The previous name is free again: every later change is undone already.
                registry.restore(previous, at: undo.address)
            } else {
                registry.remove(undo.address)
            }
        }
        inFlight = nil
        queued = Group()
        pending = [:]
        return groups.flatMap(\.held)
    }

    private mutating func release(_ addresses: [IPAddress]) {
        for address in addresses {
            if let count = pending[address], count > 1 { pending[address] = count - 1 } else { pending[address] = nil }
        }
    }
}
