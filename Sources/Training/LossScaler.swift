import Foundation

/// Dynamic loss scaling with torch.cuda.amp.GradScaler's semantics plus a floor.
public struct LossScaler: Codable, Equatable, Sendable {
    public var scale: Double
    public var growth: Double
    public var backoff: Double
    public var interval: Int
    public var minimum: Double
    /// Clean steps since the last growth or overflow.
    public var tracker = 0
    /// Overflows that hit the floor in a row (a persistent overflow, not a normal one).
    public var overflowsAtFloor = 0

    public init(initial: Double = 65536, growth: Double = 2, backoff: Double = 0.5, interval: Int = 2000, minimum: Double = 1) {
        (scale, self.growth, self.backoff, self.interval, self.minimum) = (initial, growth, backoff, interval, minimum)
    }

    public enum Event: Equatable, Sendable { case none, grew, backedOff, atFloor }

    /// After a step: on overflow multiply by backoff (not below the floor) and reset the tracker;
    /// after `interval` clean steps in a row multiply by growth.
    @discardableResult
    public mutating func update(foundInf: Bool) -> Event {
        if foundInf {
            tracker = 0
            if scale * backoff < minimum {
                let was = scale
                scale = minimum
                overflowsAtFloor = was <= minimum ? overflowsAtFloor + 1 : 0
                return .atFloor
            }
            scale *= backoff
            overflowsAtFloor = 0
            return .backedOff
        }
        overflowsAtFloor = 0
        tracker += 1
        if tracker >= interval {
            tracker = 0
            scale *= growth
            return .grew
        }
        return .none
    }
}
