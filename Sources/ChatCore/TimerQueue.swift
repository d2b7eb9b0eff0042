// Deadlines as data: what the core wants to happen at a time, kept for the
// shell to ask "when next?" and to hand back "now" when that time comes.
//
// Theory of operation
// -------------------
// A binary min-heap of (deadline, key, generation), and a table of the
// generation each live key holds now. Scheduling a key again or cancelling
// it only changes the table: the heap entry it leaves behind is stale and
// is thrown away when it reaches the top. So a deadline that never fires (a
// retransmission whose acknowledgement came, the common case) costs one
// table write to cancel and one heap entry that falls out when its time
// comes, never a search of the heap. When stale entries outnumber live ones
// the heap is rebuilt from the table, so memory stays proportional to the
// live deadlines however often keys are re-armed.
//
// Keys fire in deadline order; two keys with the same deadline fire in the
// order they were scheduled. Nothing here reads a clock.

public struct TimerQueue<Key: Hashable & Sendable>: Sendable {
    private struct Entry: Sendable {
        var deadline: Instant
        /// Scheduling order, which breaks ties and tells stale entries apart.
        var generation: UInt64
        var key: Key

        func precedes(_ other: Entry) -> Bool {
            deadline < other.deadline || deadline == other.deadline && generation < other.generation
        }
    }

    private var heap: [Entry] = []
    /// The generation and deadline each live key holds.
    private var live: [Key: (generation: UInt64, deadline: Instant)] = [:]
    private var nextGeneration: UInt64 = 0

    public init() {}

    /// Keys with a deadline.
    public var count: Int { live.count }
    public var isEmpty: Bool { live.isEmpty }

    /// The deadline `key` holds, if any.
    public func deadline(of key: Key) -> Instant? { live[key]?.deadline }

    /// Sets `key` to fire at `deadline`, replacing any deadline it held.
    public mutating func schedule(_ key: Key, at deadline: Instant) {
        let generation = nextGeneration
        nextGeneration += 1
        live[key] = (generation, deadline)
        push(Entry(deadline: deadline, generation: generation, key: key))
        if heap.count > 2 * live.count + 64 { rebuild() }
    }

    /// Removes `key`'s deadline, if it has one.
    public mutating func cancel(_ key: Key) {
        live[key] = nil
        if live.isEmpty { heap.removeAll(keepingCapacity: true) }
    }

    /// The earliest live deadline.
    public mutating func nextDeadline() -> Instant? {
        dropStaleTop()
        return heap.first?.deadline
    }

    /// The key whose deadline is earliest if that deadline is at or before
    /// `now`, removed from the queue; nil when nothing is due.
    public mutating func popDue(now: Instant) -> Key? {
        dropStaleTop()
        guard let top = heap.first, top.deadline <= now else { return nil }
        popTop()
        live[top.key] = nil
        return top.key
    }

    private func isLive(_ entry: Entry) -> Bool { live[entry.key]?.generation == entry.generation }

    private mutating func dropStaleTop() {
        while let top = heap.first, !isLive(top) { popTop() }
    }

    private mutating func rebuild() {
        heap = live.map { Entry(deadline: $0.value.deadline, generation: $0.value.generation, key: $0.key) }
        var index = heap.count / 2
        while index > 0 {
            index -= 1
            siftDown(index)
        }
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func popTop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return }
            var first = left
            if left + 1 < heap.count, heap[left + 1].precedes(heap[left]) { first = left + 1 }
            guard heap[first].precedes(heap[parent]) else { return }
            heap.swapAt(first, parent)
            parent = first
        }
    }
}
