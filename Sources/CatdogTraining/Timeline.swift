import CatdogDistributed
import CatdogSupport
import Foundation

/// Where a step's time goes on every rank, as Chrome's trace-event JSON (`chrome://tracing`,
/// Perfetto): one track per rank with its input wait, forward and backward passes, each
/// gradient bucket's all-reduce, the exposed wait for them, the optimizer, checkpoints and
/// evaluations. Bounded: it records the first `steps` updates of the run (and what happens in
/// between), then every rank sends its events to rank 0, which writes the file. Off (nil),
/// nothing is measured.
public final class Timeline {
    struct Event {
        var name: String
        var category: String
        var start: UInt64
        var duration: UInt64
    }

    public let path: String
    public let steps: Int
    private let origin: UInt64
    private var events: [Event] = []
    public private(set) var recording = true

    /// Collective: every rank starts its clock as the barrier releases them, so that their
    /// tracks line up (to within the barrier's latency).
    public init(path: String, steps: Int, communicator comm: Communicator) throws {
        self.path = path
        self.steps = steps
        try comm.barrier()
        origin = Timeline.now()
        events.reserveCapacity(min(steps, 10_000) * 16)
    }

    @inline(__always) public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Now, to pass to `record` later; 0 (and no clock read) when there is no timeline.
    @inline(__always) public static func mark(_ timeline: Timeline?) -> UInt64 { timeline == nil ? 0 : now() }

    /// Records `name` as having run from `start` (a `Timeline.now()`) until now.
    public func record(_ name: String, _ category: String, since start: UInt64) {
        guard recording else { return }
        let end = Timeline.now()
        events.append(Event(name: name, category: category, start: start &- origin, duration: end &- start))
    }

    /// This rank's events as trace-event objects, and its track's name.
    func json(rank: Int, host: String) -> String {
        func escaped(_ s: String) -> String {
            String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"?\"".utf8), as: UTF8.self)
        }
        var lines = [#"{"name":"process_name","ph":"M","pid":\#(rank),"args":{"name":\#(escaped("rank \(rank) on \(host)"))}}"#,
                     #"{"name":"process_sort_index","ph":"M","pid":\#(rank),"args":{"sort_index":\#(rank)}}"#]
        for e in events {
            lines.append(String(format: #"{"name":%@,"cat":"%@","ph":"X","ts":%.3f,"dur":%.3f,"pid":%d,"tid":0}"#,
                                escaped(e.name), e.category, Double(e.start) / 1000, Double(e.duration) / 1000, rank))
        }
        return lines.joined(separator: ",\n")
    }

    /// Collective: stops recording, gathers every rank's events on rank 0 and writes the file
    /// there (through a temporary file and a rename). Returns the number of events gathered.
    /// A failed write goes to `writeFailed` (else it is thrown); a failed collective is thrown.
    @discardableResult
    public func finish(communicator comm: Communicator, writeFailed: ((Error) -> Void)? = nil) throws -> Int {
        guard recording else { return 0 }
        recording = false
        var count = [Double(events.count)]
        try comm.allReduceSum(&count)
        let all = try comm.allGather(bytes: Array(json(rank: comm.rank, host: comm.hostName).utf8))
        events = []
        guard comm.rank == 0 else { return Int(count[0]) }
        var text = Array(#"{"displayTimeUnit":"ms","traceEvents":[\#n"#.utf8)
        for (rank, track) in all.enumerated() {
            if rank > 0 { text += Array(",\n".utf8) }
            text += track
        }
        text += Array("\n]}\n".utf8)
        do { try writeOutputFile(text, to: path, runOutput: true) } catch {
            guard let writeFailed else { throw error }
            writeFailed(error)
        }
        return Int(count[0])
    }
}
