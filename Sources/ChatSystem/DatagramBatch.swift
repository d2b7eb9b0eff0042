// Datagrams in batches: one recvmmsg fills up to `capacity` of them, one
// sendmmsg sends up to `capacity` datagrams: replies to a received batch, or
// datagrams to any endpoint (held replies today, pushes to members later).
//
// A syscall per datagram is most of what a UDP server spends at high rates;
// a batch of 64 spreads that cost. The memory (payloads, peer addresses,
// iovecs and message headers) is allocated once and reused for every batch,
// so nothing is allocated per datagram. Unsafe pointers are confined to this
// file; callers see `UnsafeRawBufferPointer` payloads and `Endpoint`s.

import CLinux
import ChatCore
import Glibc

public final class DatagramBatch {
    public let capacity: Int
    /// Payload bytes per datagram; a longer one is cut and flagged as truncated.
    public let datagramSize: Int
    /// How many datagrams the batch holds now.
    public private(set) var count = 0

    private let payloads: UnsafeMutableRawBufferPointer
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let vectors: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<chatd_mmsghdr>

    public init(capacity: Int = 64, datagramSize: Int = 2048) {
        precondition(capacity > 0 && datagramSize > 0)
        self.capacity = capacity
        self.datagramSize = datagramSize
        payloads = .allocate(byteCount: capacity * datagramSize, alignment: 16)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_storage(), count: capacity)
        vectors = .allocate(capacity: capacity)
        headers = .allocate(capacity: capacity)
        headers.initialize(repeating: chatd_mmsghdr(), count: capacity)
        for index in 0..<capacity {
            vectors[index] = iovec(iov_base: payloads.baseAddress! + index * datagramSize, iov_len: datagramSize)
        }
    }

    deinit {
        payloads.deallocate()
        addresses.deallocate()
        vectors.deallocate()
        headers.deallocate()
    }

    /// Empties the batch (for filling it with replies).
    public func removeAll() {
        count = 0
    }

    // MARK: - Received datagrams

    /// The payload of datagram `index` (at most `datagramSize` bytes).
    public func payload(at index: Int) -> UnsafeRawBufferPointer {
        precondition(index < count)
        let length = min(Int(headers[index].msg_len), datagramSize)
        return UnsafeRawBufferPointer(start: payloads.baseAddress! + index * datagramSize, count: length)
    }

    /// Whether datagram `index` was longer than `datagramSize` and cut.
    public func isTruncated(at index: Int) -> Bool {
        precondition(index < count)
        return headers[index].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0
    }

    /// Where datagram `index` came from (v4-mapped IPv6 folded to IPv4).
    public func source(at index: Int) -> Endpoint {
        precondition(index < count)
        return SocketAddress.endpoint(of: &addresses[index])
    }

    /// Whether `append` changed headers that receiving needs in their initial form.
    private var usedForSending = true

    fileprivate func prepareForReceive() {
        guard usedForSending else {
            // The kernel only shortens the address lengths; everything else stands.
            for index in 0..<capacity {
                headers[index].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            }
            return
        }
        usedForSending = false
        for index in 0..<capacity {
            vectors[index].iov_len = datagramSize
            headers[index] = chatd_mmsghdr()
            headers[index].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + index)
            headers[index].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            headers[index].msg_hdr.msg_iov = vectors + index
            headers[index].msg_hdr.msg_iovlen = 1
        }
    }

    fileprivate func received(_ count: Int) {
        self.count = count
    }

    // MARK: - Replies

    /// Adds a datagram addressed to the source of datagram `index` of
    /// `batch` (the request it answers); false when this batch is full.
    /// `bytes` longer than `datagramSize` are cut.
    @discardableResult
    public func append(_ bytes: UnsafeRawBufferPointer, replyingTo index: Int, of batch: DatagramBatch) -> Bool {
        guard count < capacity else { return false }
        addresses[count] = batch.addresses[index]
        fillNext(with: bytes, addressLength: batch.headers[index].msg_hdr.msg_namelen)
        return true
    }

    /// Adds a datagram for `destination`, addressed as `socket` needs it
    /// (IPv4 as `::ffff:a.b.c.d` on an IPv6 socket); false when this batch
    /// is full. Throws for an IPv6 destination on an IPv4 socket.
    /// `bytes` longer than `datagramSize` are cut.
    public func append(_ bytes: UnsafeRawBufferPointer, to destination: Endpoint, on socket: UDPSocket) throws -> Bool {
        guard count < capacity else { return false }
        let slot = count
        let length = try SocketAddress.with(destination, ipv6: socket.isIPv6) { address, length in
            UnsafeMutableRawPointer(addresses + slot).copyMemory(from: address, byteCount: Int(length))
            return length
        }
        fillNext(with: bytes, addressLength: length)
        return true
    }

    /// Fills the next slot, whose address is already in place, with `bytes`.
    private func fillNext(with bytes: UnsafeRawBufferPointer, addressLength: socklen_t) {
        usedForSending = true
        let slot = count
        let length = min(bytes.count, datagramSize)
        if let source = bytes.baseAddress {
            (payloads.baseAddress! + slot * datagramSize).copyMemory(from: source, byteCount: length)
        }
        vectors[slot].iov_len = length
        headers[slot] = chatd_mmsghdr()
        headers[slot].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + slot)
        headers[slot].msg_hdr.msg_namelen = addressLength
        headers[slot].msg_hdr.msg_iov = vectors + slot
        headers[slot].msg_hdr.msg_iovlen = 1
        count += 1
    }

    fileprivate var headerPointer: UnsafeMutablePointer<chatd_mmsghdr> { headers }
}

// MARK: - Sending and receiving

extension UDPSocket {
    /// Fills `batch` with as many waiting datagrams as it holds, without
    /// blocking. Returns how many (0 when none are waiting).
    public func receive(into batch: DatagramBatch) throws -> Int {
        batch.prepareForReceive()
        while true {
            let result = chatd_recvmmsg(fd, batch.headerPointer, UInt32(batch.capacity), Int32(MSG_DONTWAIT))
            if result >= 0 {
                batch.received(Int(result))
                return Int(result)
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK:
                batch.received(0)
                return 0
            default:
                batch.received(0)
                throw SystemError(errno: errno, call: "recvmmsg")
            }
        }
    }

    /// What sending a batch did.
    public struct BatchSendResult: Equatable, Sendable {
        /// Datagrams handed to the kernel.
        public var sent = 0
        /// Datagrams not sent because the send buffer was full.
        public var wouldBlock = 0
        /// Datagrams the kernel refused, with the first error.
        public var failed = 0
        public var firstError: SystemError?
    }

    /// Sends every datagram of `batch`. A datagram the kernel refuses
    /// (ENOBUFS, EPERM from a firewall, ECONNREFUSED from an earlier ICMP
    /// error) is skipped and counted so the rest still go out; a full send
    /// buffer stops the batch, since UDP may drop and clients retry.
    public func send(_ batch: DatagramBatch) -> BatchSendResult {
        var result = BatchSendResult()
        var next = 0
        while next < batch.count {
            let sent = chatd_sendmmsg(fd, batch.headerPointer + next, UInt32(batch.count - next), Int32(MSG_DONTWAIT))
            if sent > 0 {
                result.sent += Int(sent)
                next += Int(sent)
                continue
            }
            let code = errno
            switch code {
            case EINTR:
                continue
            case EAGAIN, EWOULDBLOCK:
                result.wouldBlock = batch.count - next
                return result
            default:
                result.failed += 1
                if result.firstError == nil { result.firstError = SystemError(errno: code, call: "sendmmsg") }
                next += 1  // skip the datagram that failed
            }
        }
        return result
    }
}
