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

/// Memory figures from /proc (Linux; nil elsewhere or when unreadable).
public enum MemoryStatus {
    /// This process's peak resident set (VmHWM), in bytes.
    public static func peakResidentBytes() -> Int? { field("VmHWM:", in: "/proc/self/status") }
    /// This process's resident set now (VmRSS), in bytes.
    public static func residentBytes() -> Int? { field("VmRSS:", in: "/proc/self/status") }
    /// Memory the kernel says it can give without swapping (MemAvailable), in bytes.
    public static func availableBytes() -> Int? { field("MemAvailable:", in: "/proc/meminfo") }

    /// A "Name:   1234 kB" line of a small /proc file.
    private static func field(_ name: String, in path: String) -> Int? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let text = String(decoding: (try? handle.read(upToCount: 1 << 16)) ?? Data(), as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
              let kB = Int(line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") else { return nil }
        return kB * 1024
    }
}
