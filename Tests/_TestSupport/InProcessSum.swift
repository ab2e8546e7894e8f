import Foundation

/// An in-process all-reduce for tests: each of `parties` threads hands in its values and gets the
/// sum back (added in rank order, so every party gets the same bits).
public final class InProcessSum: @unchecked Sendable {
    private let condition = NSCondition()
    private var parts: [[Double]]
    private var arrived = 0, generation = 0
    private var result: [Double] = []

    public init(parties: Int) { parts = Array(repeating: [], count: parties) }

    public func sum(rank: Int, _ values: UnsafeMutablePointer<Double>, _ count: Int) {
        condition.lock()
        defer { condition.unlock() }
        let mine = generation
        parts[rank] = Array(UnsafeBufferPointer(start: values, count: count))
        arrived += 1
        if arrived == parts.count {
            result = parts.dropFirst().reduce(parts[0]) { zip($0, $1).map(+) }
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
        for i in 0..<count { values[i] = result[i] }
    }
}
