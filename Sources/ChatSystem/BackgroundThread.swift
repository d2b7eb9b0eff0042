// One thread beside the event loop, for work too long to do on it (writing
// a snapshot of a million users takes a quarter of a second or more).
//
// Jobs run one at a time, in order. After each, the thread bumps an eventfd
// that the event loop has in its epoll set, so the loop learns of finished
// work the same way it learns of datagrams and signals, without locks of its
// own. A job hands its result back through whatever Sendable box it closes
// over. Create it after the signals are blocked (SignalFD): the thread
// inherits the mask, so SIGTERM and friends still reach only the signalfd.

import CLinux
import Glibc
import Synchronization

public final class BackgroundThread: @unchecked Sendable {
    // @unchecked: `wakeup` is a POSIX semaphore, safe to use from any thread;
    // everything else is immutable or inside the Mutex.

    /// Readable (level-triggered) when jobs have finished since the last `acknowledge()`.
    public let fd: Int32
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let wakeup: UnsafeMutablePointer<sem_t>

    public init() throws {
        fd = try syscall("eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        wakeup = .allocate(capacity: 1)
        sem_init(wakeup, 0, 0)
        var thread = pthread_t()
        let me = Unmanaged.passRetained(self).toOpaque()  // the thread keeps it alive
        let code = pthread_create(&thread, nil, { argument in
            Unmanaged<BackgroundThread>.fromOpaque(argument!).takeUnretainedValue().serve()
        }, me)
        if code != 0 {
            Unmanaged<BackgroundThread>.fromOpaque(me).release()
            throw SystemError(errno: code, call: "pthread_create")
        }
        pthread_detach(thread)
    }

    /// Queues `job` to run on the background thread.
    public func run(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(job) }
        sem_post(wakeup)
    }

    /// How many jobs finished since the last call (resets the eventfd).
    public func acknowledge() throws -> UInt64 {
        var count: UInt64 = 0
        let result = try withUnsafeMutableBytes(of: &count) { try Posix.read(fd: fd, into: $0) }
        guard case .processed = result else { return 0 }
        return count
    }

    /// Blocks until a job has finished since the last `acknowledge()`.
    public func waitForCompletion() throws {
        _ = try Posix.poll(fd: fd, events: Int16(POLLIN), timeoutMilliseconds: -1)
    }

    private func serve() -> Never {
        while true {
            while sem_wait(wakeup) != 0 {}  // EINTR
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            job()
            var one: UInt64 = 1
            _ = Glibc.write(fd, &one, 8)
        }
    }
}
