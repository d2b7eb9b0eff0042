// The server's side of CHAT/1: one datagram and its source in, one reply out.
//
// The handler is a function of (datagram, source address, registry): the
// answer to each request, as the table below and docs/PROTOCOL.md give it.
// It keeps no state of its own; ChatService, which owns the registry, calls
// it for every datagram and decides everything around the answer (rate
// limits, amplification, durability, what to report). The `Event` it
// returns says what happened, and `Event.change` is the one place that says
// which events change the registry.
//
//   CONNECT              known address -> SUCCESS <name>
//                        unknown       -> ERROR CLIENT_NOT_FOUND
//   INTRODUCE <name>     name off the rule             -> ERROR INVALID_USERNAME SYNTAX
//                        held by another address        -> ERROR INVALID_USERNAME TAKEN
//                        held by this address (any case)-> SUCCESS <name> (spelling updated)
//                        this address held another name -> SUCCESS <name> (renamed)
//                        new address, registry full     -> ERROR SERVER_FULL
//                        new address                    -> SUCCESS <name> (registered)
//   off the grammar      -> ERROR MALFORMED / UNSUPPORTED_VERSION, or dropped (see Protocol.swift)

public enum RequestHandler {
    /// What handling one datagram did.
    public enum Event: Equatable, Sendable {
        case dropped
        case malformed
        case unsupportedVersion
        case connected(Username)
        case notFound
        case registered(Username)
        case renamed(from: Username, to: Username)
        /// INTRODUCE of the name the address already holds; `from` and `to`
        /// differ only when the spelling changed.
        case reintroduced(from: Username, to: Username)
        case invalidUsername
        case taken(Username)
        case full(Username)

        /// The change this event made to the registry: the name the source
        /// address now holds and the one it held before (nil if it was new);
        /// nil when the registry did not change. A respelling is a change.
        public var change: (name: Username, previous: Username?)? {
            switch self {
            case .registered(let name): (name, nil)
            case .renamed(let previous, let name): (name, previous)
            case .reintroduced(let previous, let name) where previous.text != name.text: (name, previous)
            default: nil
            }
        }

        /// Whether the registry changed and must be saved again.
        public var changedRegistry: Bool { change != nil }
    }

    public struct Result: Equatable, Sendable {
        /// The answer to send back to the source, if any.
        public var reply: Response?
        public var event: Event
    }

    public static func handle(
        _ datagram: UnsafeRawBufferPointer, from address: IPAddress, registry: inout Registry
    ) -> Result {
        handle(RequestParse(datagram), from: address, registry: &registry)
    }

    public static func handle(_ parse: RequestParse, from address: IPAddress, registry: inout Registry) -> Result {
        switch parse {
        case .notChat, .chat, .invalidMessage:
            // The chat room's verbs are ChatService's to answer, not this table's.
            return Result(reply: nil, event: .dropped)
        case .malformed(let id):
            return Result(reply: .error(id: id, reason: .malformed), event: .malformed)
        case .unsupportedVersion(let id):
            return Result(reply: .error(id: id, reason: .unsupportedVersion), event: .unsupportedVersion)
        case .invalidUsername(let id):
            return Result(
                reply: .error(id: id, reason: .invalidUsername, detail: ErrorDetail.syntax),
                event: .invalidUsername)
        case .request(.connect(let id)):
            guard let name = registry.username(for: address) else {
                return Result(reply: .error(id: id, reason: .clientNotFound), event: .notFound)
            }
            return Result(reply: .success(id: id, username: name), event: .connected(name))
        case .request(.introduce(let id, let name)):
            let success = Response.success(id: id, username: name)
            switch registry.introduce(name, from: address) {
            case .registered:
                return Result(reply: success, event: .registered(name))
            case .renamed(let previous):
                return Result(reply: success, event: .renamed(from: previous, to: name))
            case .unchanged(let previous):
                return Result(reply: success, event: .reintroduced(from: previous, to: name))
            case .taken:
                return Result(
                    reply: .error(id: id, reason: .invalidUsername, detail: ErrorDetail.taken),
                    event: .taken(name))
            case .full:
                return Result(reply: .error(id: id, reason: .serverFull), event: .full(name))
            }
        }
    }

    public static func handle(_ datagram: [UInt8], from address: IPAddress, registry: inout Registry) -> Result {
        datagram.withUnsafeBytes { handle($0, from: address, registry: &registry) }
    }
}
