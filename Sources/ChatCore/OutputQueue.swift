/// What a sans-I/O machine has for its owner (datagrams, events, output),
/// taken in order with `poll()`. Only appended to until drained, then
/// emptied keeping its capacity: no allocation once warm.
struct OutputQueue<Element> {
    private var elements: [Element] = []
    private var taken = 0

    /// Everything appended has been taken.
    var isDrained: Bool { taken == elements.count }

    mutating func append(_ element: Element) { elements.append(element) }

    mutating func poll() -> Element? {
        guard taken < elements.count else {
            if taken > 0 {
                elements.removeAll(keepingCapacity: true)
                taken = 0
            }
            return nil
        }
        taken += 1
        return elements[taken - 1]
    }
}

extension OutputQueue: Sendable where Element: Sendable {}
