// The server's side of CHAT/1: one datagram and its source in, one reply out.
//
// The handler is a function of (datagram, source address, registry). It does
// no I/O and keeps no state of its own, so everything the server promises
// about answers can be tested without a socket. The `Event` it returns says
// what happened in terms the caller needs: whether to log it, at what level,
// and whether the registry must be saved again.
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

        /// Whether the registry changed and must be saved again.
        public var changedRegistry: Bool {
            switch self {
            case .registered, .renamed: true
            case .reintroduced(let from, let to): from.text != to.text
            default: false
            }
        }
    }

    public struct Result: Equatable, Sendable {
        /// The answer to send back to the source, if any.
        public var reply: Response?
        public var event: Event
    }

    public static func handle(
        _ datagram: UnsafeRawBufferPointer, from address: IPAddress, registry: inout Registry
    ) -> Result {
        switch RequestParse(datagram) {
        case .notChat:
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
