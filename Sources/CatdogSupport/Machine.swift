import Foundation

/// What a performance figure was measured on: the CPU model and the vector extensions that
/// decide which kernels run (read from /proc/cpuinfo; "unknown" elsewhere).
public struct MachineDescription: Codable, Sendable, Equatable {
    public var cpu: String
    public var vectorFlags: [String]
    public var cores: Int
    /// /proc/cpuinfo's "cpu family" and "model" (nil where not read): a model name such as
    /// "AMD EPYC" does not tell a Zen 4 (family 25) from a Zen 5 (26).
    public var cpuFamily: Int?
    public var cpuModel: Int?

    /// The flags that change which kernels OpenBLAS, oneDNN or our own code can use.
    static let interesting = ["sse4_2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                              "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"]

    public static func current() -> MachineDescription {
        // /proc/cpuinfo is small (a few KB per core); read at most 1 MB of it.
        let text = FileHandle(forReadingAtPath: "/proc/cpuinfo").map { handle in
            defer { try? handle.close() }
            return String(decoding: (try? handle.read(upToCount: 1 << 20)) ?? Data(), as: UTF8.self)
        } ?? ""
        return parse(cpuinfo: text, cores: ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The first processor's fields of a /proc/cpuinfo text ("key<tabs>: value" lines; a key
    /// matches whole, so "model" is not "model name").
    public static func parse(cpuinfo text: String, cores: Int) -> MachineDescription {
        func field(_ name: String) -> String? {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name {
                    return parts[1].trimmingCharacters(in: .whitespaces)
                }
            }
            return nil
        }
        let flags = Set((field("flags") ?? "").split(separator: " ").map(String.init))
        let number = { (name: String) in field(name).flatMap { Int($0) }.flatMap { (0..<1 << 20).contains($0) ? $0 : nil } }
        return MachineDescription(cpu: field("model name").map { String($0.prefix(200)) } ?? "unknown",
                                  vectorFlags: interesting.filter(flags.contains), cores: cores,
                                  cpuFamily: number("cpu family"), cpuModel: number("model"))
    }

    /// The CPU as figures name it: "AMD EPYC (CPU family 25, model 17)", the family and model
    /// where read. JSON carries it as "label", so scripts print it without formatting it again.
    public var label: String {
        cpu + (cpuFamily.map { family in " (CPU family \(family)\(cpuModel.map { ", model \($0)" } ?? ""))" } ?? "")
    }

    public var summary: String {
        "\(label), \(cores) cores, \(vectorFlags.isEmpty ? "no vector flags read" : vectorFlags.joined(separator: " "))"
    }

    private enum CodingKeys: String, CodingKey { case cpu, vectorFlags, cores, cpuFamily, cpuModel }
    private enum DerivedKeys: String, CodingKey { case label }

    /// The stored fields, and the label beside them (for readers; decoding ignores it).
    public func encode(to encoder: Encoder) throws {
        var fields = encoder.container(keyedBy: CodingKeys.self)
        try fields.encode(cpu, forKey: .cpu)
        try fields.encode(vectorFlags, forKey: .vectorFlags)
        try fields.encode(cores, forKey: .cores)
        try fields.encodeIfPresent(cpuFamily, forKey: .cpuFamily)
        try fields.encodeIfPresent(cpuModel, forKey: .cpuModel)
        var derived = encoder.container(keyedBy: DerivedKeys.self)
        try derived.encode(label, forKey: .label)
    }
}

/// Memory a process can still take, and what set the figure: the machine's free memory, or
/// the memory limit of its control group (a Slurm job's `--mem`, a container's limit), which
/// a refusal names so that the user knows which to change.
public struct AvailableMemory: Sendable, Equatable {
    public var bytes: Int
    /// The control group whose limit set `bytes` ("/slurm/uid_0/job_42"); nil: the machine's
    /// MemAvailable did.
    public var controlGroup: String?

    public init(bytes: Int, controlGroup: String? = nil) {
        self.bytes = bytes
        self.controlGroup = controlGroup
    }

    /// What follows "the 3.9 GiB" in a refusal: "this machine has available", or "left under
    /// the memory limit of control group /slurm/uid_0/job_42".
    public var source: String {
        controlGroup.map { "left under the memory limit of control group \($0)" } ?? "this machine has available"
    }

    /// The remedy a refusal adds where a control group's limit set the figure.
    public var raiseLimit: String {
        controlGroup == nil ? "" : ", or raise that limit (a Slurm job's --mem, a container's memory limit)"
    }
}

/// Memory figures from /proc (Linux; nil elsewhere or when unreadable).
public enum MemoryStatus {
    /// This process's peak resident set (VmHWM), in bytes.
    public static func peakResidentBytes() -> Int? { field("VmHWM:", in: "/proc/self/status") }
    /// This process's resident set now (VmRSS), in bytes.
    public static func residentBytes() -> Int? { field("VmRSS:", in: "/proc/self/status") }
    /// Memory this process can still take, in bytes: what the kernel says it can give without
    /// swapping (MemAvailable), or less where this process's control group (a Slurm job's, a
    /// container's) has a memory limit closer to what it uses (`cgroupHeadroom`).
    public static func availableBytes() -> Int? { available()?.bytes }

    /// `availableBytes`, and the control group whose limit set it, if one did.
    public static func available() -> AvailableMemory? {
        available(machine: field("MemAvailable:", in: "/proc/meminfo"), limited: cgroupHeadroom(read: readSmallFile))
    }

    /// The least of the machine's free memory and a control group's room (the machine's on a tie).
    public static func available(machine: Int?, limited: (bytes: Int, group: String)?) -> AvailableMemory? {
        guard let limited, limited.bytes < machine ?? Int.max else { return machine.map { AvailableMemory(bytes: $0) } }
        return AvailableMemory(bytes: limited.bytes, controlGroup: limited.group)
    }

    /// The least room left under the memory limits of this process's control group and its
    /// ancestors: cgroup v2 (`memory.max` less `memory.current`, under /sys/fs/cgroup or the
    /// hybrid layout's /sys/fs/cgroup/unified) and v1 (`memory.limit_in_bytes` less
    /// `memory.usage_in_bytes`, under /sys/fs/cgroup/memory). What is charged counts without
    /// the inactive file cache, which the kernel reclaims before it kills (the data files a job
    /// has read are charged to it). nil: no limit found; else the room and the group whose
    /// limit leaves it ("/slurm/uid_0/job_42"). `read` returns a small file's text.
    public static func cgroupHeadroom(read: (String) -> String?) -> (bytes: Int, group: String)? {
        guard let table = read("/proc/self/cgroup") else { return nil }
        struct Files { let root: String; let limit: String; let usage: String; let inactive: String }
        var places: [(Files, String)] = []
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[2].hasPrefix("/") else { continue }
            let path = String(fields[2])
            if fields[0] == "0", fields[1].isEmpty {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    places.append((Files(root: root, limit: "memory.max", usage: "memory.current", inactive: "inactive_file"), path))
                }
            } else if fields[1].split(separator: ",").contains("memory") {
                places.append((Files(root: "/sys/fs/cgroup/memory", limit: "memory.limit_in_bytes", usage: "memory.usage_in_bytes",
                                     inactive: "total_inactive_file"), path))
            }
        }
        func number(_ text: String?) -> Int? { text.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        var least: (bytes: Int, group: String)?
        for (files, path) in places {
            // The group itself, then each ancestor up to the hierarchy's root (no "..": the
            // path is cut at its slashes).
            var parts = path.split(separator: "/").map(String.init)
            // A group outside this cgroup namespace's view ("/../.."): its files are not here.
            if parts.contains("..") { continue }
            while true {
                let directory = ([files.root] + parts).joined(separator: "/")
                // "max", or v1's unlimited (the largest page-aligned Int64): no limit here.
                if let limit = number(read(directory + "/" + files.limit)), limit > 0, limit < 1 << 60,
                   let usage = number(read(directory + "/" + files.usage)) {
                    let stat = read(directory + "/memory.stat") ?? ""
                    let inactive = stat.split(separator: "\n").lazy.compactMap { line -> Int? in
                        let pair = line.split(separator: " ")
                        return pair.count == 2 && pair[0] == files.inactive ? Int(pair[1]) : nil
                    }.first ?? 0
                    // Each figure clamped to 0 first, so no subtraction can overflow.
                    let headroom = max(0, limit - max(0, max(0, usage) - max(0, inactive)))
                    if headroom < least?.bytes ?? Int.max { least = (headroom, "/" + parts.joined(separator: "/")) }
                }
                if parts.isEmpty { break }
                parts.removeLast()
            }
        }
        return least
    }

    /// The first 64 KiB of a small /proc or /sys file, nil when it cannot be read.
    private static func readSmallFile(_ path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: 1 << 16) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// A "Name:   1234 kB" line of a small /proc file.
    private static func field(_ name: String, in path: String) -> Int? {
        guard let text = readSmallFile(path) else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
              let kB = Int(line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") else { return nil }
        return kB * 1024
    }
}
