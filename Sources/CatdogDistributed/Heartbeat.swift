import Foundation

/// What each rank last heard from its peers: the last update each one finished computing
/// (its forward and backward; it then waits in the all-reduce) and when. Filled by the training thread; read by the stall watchdog's thread,
/// so that a rank stuck in a collective can say whom it is waiting for.
public final class HeartbeatTable: @unchecked Sendable {
    public struct Peer: Sendable, Equatable {
        public var rank: Int
        public var host: String
        /// The last progress the peer announced, and when this rank heard it; nil if never.
        public var progress: Int?
        public var heard: Date?
    }

    private let lock = NSLock()
    private var peers: [Peer]
    private var mine: Int?
    private var lastPoll: Date?
    public let rank: Int
    /// A peer waiting in the same all-reduce repeats its heartbeat every `interval` seconds;
    /// one not heard for `silentAfter` seconds while this rank listens has stopped.
    public static let interval = 1.0
    public static let silentAfter = 3.5

    /// `hosts[r]` is rank r's host name.
    public init(rank: Int, hosts: [String]) {
        self.rank = rank
        peers = hosts.enumerated().map { Peer(rank: $0.offset, host: $0.element) }
    }

    public func announced(_ progress: Int) {
        lock.lock(); mine = progress; lock.unlock()
    }

    /// This rank took in what had arrived (it is waiting in an all-reduce and listening).
    public func polled(at time: Date) {
        lock.lock(); lastPoll = time; lock.unlock()
    }

    public func heard(rank: Int, progress: Int, at time: Date) {
        guard peers.indices.contains(rank), rank != self.rank else { return }
        lock.lock()
        // Messages from one peer arrive in order; keep the newest.
        if (peers[rank].progress ?? Int.min) <= progress {
            peers[rank].progress = progress
            peers[rank].heard = time
        }
        lock.unlock()
    }

    public var snapshot: (mine: Int?, peers: [Peer], lastPoll: Date?) {
        lock.lock(); defer { lock.unlock() }
        return (mine, peers.filter { $0.rank != rank }, lastPoll)
    }

    /// The peer silent longest, if one has been silent for more than `seconds` while this rank
    /// listens and had finished computing this rank's update (so it should be waiting in the
    /// same collective, repeating its heartbeat): a peer that froze or lost its link. `except`
    /// is a rank known to be busy without listening (rank 0 writing a checkpoint).
    public func silentPeer(now: Date = Date(), longerThan seconds: Double, except: Int? = nil) -> (peer: Peer, silence: Double)? {
        let (mine, peers, lastPoll) = snapshot
        guard let mine, let lastPoll, now.timeIntervalSince(lastPoll) < Self.silentAfter else { return nil }
        return peers.compactMap { peer -> (peer: Peer, silence: Double)? in
            guard peer.rank != except, let progress = peer.progress, progress >= mine, let heard = peer.heard else { return nil }
            let silence = now.timeIntervalSince(heard)
            return silence > seconds ? (peer, silence) : nil
        }.max { $0.silence < $1.silence }
    }

    /// One sentence naming the peers this rank is waiting for: those that have not finished
    /// computing its update, and, while it listens, those gone silent, e.g. "Waiting for
    /// rank 1 on h2 (silent for 24 s, last done with update 365); this rank has computed update 366."
    public func report(now: Date = Date()) -> String {
        let (mine, peers, lastPoll) = snapshot
        guard let mine else { return "No update computed yet, so no peer can be named." }
        let listening = lastPoll.map { now.timeIntervalSince($0) < Self.silentAfter } ?? false
        func silence(_ peer: Peer) -> Double { peer.heard.map { now.timeIntervalSince($0) } ?? .infinity }
        let suspects = peers.filter { ($0.progress ?? Int.min) < mine || (listening && silence($0) > Self.silentAfter) }
            .sorted { silence($0) > silence($1) }
        if suspects.isEmpty {
            return listening
                ? "Every peer finished computing update \(mine) and is still heard; the wait is inside the all-reduce."
                : "Every peer finished computing update \(mine) too; the wait is inside a collective (the network, or a peer that stopped in it)."
        }
        let shown = suspects.prefix(8).map { peer -> String in
            guard let progress = peer.progress else { return "rank \(peer.rank) on \(peer.host) (never heard)" }
            let state = progress < mine ? "not done computing update \(mine)" : "silent"
            return String(format: "rank %d on %@ (%@, last heard %.0f s ago, done with update %d)", peer.rank, peer.host,
                          state, silence(peer), progress)
        }
        let more = suspects.count > shown.count ? " and \(suspects.count - shown.count) more" : ""
        return "Waiting for \(shown.joined(separator: ", "))\(more); this rank has computed update \(mine)."
    }
}
