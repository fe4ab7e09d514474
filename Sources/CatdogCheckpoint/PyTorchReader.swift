import CatdogSupport
import Foundation

/// Reads PyTorch state dicts (`torch.save(model.state_dict())`) without Python and without
/// running anything the file says: a small pickle interpreter that knows only the opcodes a
/// state dict uses and only three callables (`torch._utils._rebuild_tensor_v2`, the
/// `torch.*Storage` types, `collections.OrderedDict`). Anything else is refused with the
/// opcode or name that was found. Both container formats are read:
///
/// - legacy (before PyTorch 1.6): five pickles in a row (magic number, protocol, system info,
///   the state dict, the storage keys), then each storage as an 8-byte element count and its
///   little-endian bytes;
/// - zip (PyTorch 1.6 on): `<name>/data.pkl` and one stored (uncompressed) entry
///   `<name>/data/<key>` per storage.
///
/// Every size, offset and stride is checked against the bytes that are really there, and
/// nothing is allocated beyond them.
public enum PyTorchReader {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// One float tensor of the state dict, made contiguous.
    public struct Tensor: Sendable {
        public var shape: [Int]
        public var values: [Float]
    }

    /// Reads the file at `path` (either format); its first bytes are checked before the rest is read.
    public static func read(_ path: String) throws -> [String: Tensor] {
        var bytes: [UInt8] = []
        do {
            let file = try BoundedFileReader(path, limit: maxFileBytes)
            try file.read(4, appendingTo: &bytes)
            guard bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) || bytes.first == 0x80 else {
                throw Failure("not a PyTorch checkpoint (neither a zip file nor a pickle)")
            }
            try file.read(file.size, appendingTo: &bytes)
        } catch let error as Failure {
            throw Failure("\(path): \(error)")
        } catch {
            throw Failure("\(path): \(error)")
        }
        return try read(bytes: bytes)
    }

    /// Far above any model this program imports (EfficientNet-Lite0's .pth is 19 MB, Lite2's 40 MB).
    public static let maxFileBytes = 256 << 20
    /// The float tensors made from a file may hold at most this much more than the file's own
    /// size (views of one storage are copied apart; a file of a few MB must not become gigabytes).
    static let maxExpansionBytes = 64 << 20

    /// Reads a state dict from the bytes of a `.pth` file (either format).
    public static func read(bytes: [UInt8]) throws -> [String: Tensor] {
        if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return try readZip(bytes) }
        return try readLegacy(bytes)
    }

    // MARK: - Containers

    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]  // 0x1950A86A20F9469CFC6C

    static func readZip(_ bytes: [UInt8]) throws -> [String: Tensor] {
        let zip = try StoredZip(bytes)
        guard let pickleName = zip.names.first(where: { $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }) else {
            throw Failure("a zip file without data.pkl: not a PyTorch checkpoint")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        var unpickler = Unpickler(bytes: try zip.contents(pickleName), position: 0, fileSize: bytes.count)
        let state = try unpickler.load()
        return try tensors(from: state, storages: unpickler.storages, bytes: bytes) { key in
            let name = prefix + "data/" + key
            guard let range = try? zip.range(name) else { throw Failure("storage \(key) has no entry \(name) in the zip file") }
            return range
        }
    }

    static func readLegacy(_ bytes: [UInt8]) throws -> [String: Tensor] {
        var unpickler = Unpickler(bytes: bytes, position: 0, fileSize: bytes.count)
        guard bytes.count >= 2, bytes[0] == 0x80 else { throw Failure("not a PyTorch checkpoint (neither a pickle nor a zip file)") }
        guard case .bytes(let magic) = try unpickler.load(), magic == legacyMagic else {
            throw Failure("not a PyTorch checkpoint (bad magic number)")
        }
        guard case .int(let protocolVersion) = try unpickler.load(), protocolVersion == 1001 else {
            throw Failure("unsupported legacy PyTorch protocol version")
        }
        _ = try unpickler.load()  // system info: endianness and type sizes
        let state = try unpickler.load()
        guard case .list(let keyList) = try unpickler.load() else { throw Failure("the storage key list is missing") }
        var position = unpickler.position
        var ranges: [String: Range<Int>] = [:]
        for item in keyList.items {
            guard case .string(let key) = item, let storage = unpickler.storages[key] else {
                throw Failure("storage key list names a storage the state dict does not use")
            }
            guard position <= bytes.count - 8 else { throw Failure("truncated: storage \(key) has no length") }
            let count = bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: Int64.self)) }
            position += 8
            let available = (bytes.count - position) / storage.elementSize
            guard count >= 0, count <= Int64(available) else {
                throw Failure("truncated or corrupt: storage \(key) claims \(count) elements, \(available) fit in the file")
            }
            let byteCount = Int(count) * storage.elementSize
            ranges[key] = position..<(position + byteCount)
            position += byteCount
        }
        return try tensors(from: state, storages: unpickler.storages, bytes: bytes) { key in
            guard let range = ranges[key] else { throw Failure("storage \(key) has no data in the file") }
            return range
        }
    }

    /// The float tensors of `state` (a dict of name → tensor), each made contiguous from its
    /// storage's bytes (`range(key)` in `bytes`). Integer tensors (e.g. BatchNorm's
    /// `num_batches_tracked`) are left out.
    static func tensors(from state: Value, storages: [String: Storage], bytes: [UInt8],
                        range: (String) throws -> Range<Int>) throws -> [String: Tensor] {
        guard case .dict(let dict) = state else { throw Failure("the file does not hold a state dict (a dict of tensors)") }
        var result: [String: Tensor] = [:]
        var floats = 0
        for (key, value) in dict.items {
            guard case .string(let name) = key else { throw Failure("a state dict key is not a string") }
            guard case .tensor(let t) = value else { continue }
            guard let storage = storages[t.storageKey] else { throw Failure("tensor \(name) refers to an unknown storage") }
            guard storage.kind == "FloatStorage" else { continue }
            let r = try range(t.storageKey)
            guard r.count == storage.count * 4 else {  // count ≤ the file's size (persistent), so no overflow
                throw Failure("storage of \(name) holds \(r.count) bytes, its header says \(storage.count) floats")
            }
            guard result[name] == nil else { throw Failure("the state dict names \(printable(name.prefix(200))) twice") }
            let tensor = try contiguous(t, storageBytes: r, in: bytes, elements: storage.count, name: name,
                                        budget: (bytes.count + maxExpansionBytes) / 4 - floats)
            floats += tensor.values.count
            result[name] = tensor
        }
        return result
    }

    /// `budget`: the most floats this tensor may hold (what is left of the file's allowance).
    static func contiguous(_ t: TensorRef, storageBytes r: Range<Int>, in bytes: [UInt8], elements: Int, name: String,
                           budget: Int = .max) throws -> Tensor {
        guard t.size.count == t.stride.count, t.size.count <= 8, t.offset >= 0,
              t.size.allSatisfy({ $0 >= 0 }), t.stride.allSatisfy({ $0 >= 0 }) else {
            throw Failure("tensor \(name) has an invalid size \(t.size) or stride \(t.stride)")
        }
        var count = 1
        for s in t.size {
            let (product, overflow) = count.multipliedReportingOverflow(by: s)
            guard !overflow, product <= elements || elements == 0 && product == 0 else {
                throw Failure("tensor \(name) of size \(t.size) needs more values than its storage holds (\(elements))")
            }
            count = product
        }
        guard count <= budget else {
            throw Failure("tensor \(printable(name.prefix(200))) would take the tensors made from this file past its size plus \(maxExpansionBytes >> 20) MiB (many views of one storage?)")
        }
        var values = [Float](repeating: 0, count: count)
        guard count > 0 else { return Tensor(shape: t.size, values: values) }
        // The furthest element the view reaches must lie inside the storage.
        var last = t.offset
        for (s, st) in zip(t.size, t.stride) {
            let (reach, o1) = (s - 1).multipliedReportingOverflow(by: st)
            let (sum, o2) = last.addingReportingOverflow(reach)
            guard !o1, !o2 else { throw Failure("tensor \(name) has strides that overflow") }
            last = sum
        }
        guard last < elements else {
            throw Failure("tensor \(name) (offset \(t.offset), size \(t.size), stride \(t.stride)) reaches past its storage of \(elements) values")
        }
        bytes.withUnsafeBytes { raw in
            let base = raw.baseAddress! + r.lowerBound
            var index = [Int](repeating: 0, count: t.size.count)
            for i in 0..<count {
                var element = t.offset
                for d in 0..<index.count { element += index[d] * t.stride[d] }
                values[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: element * 4, as: UInt32.self)))
                var d = index.count - 1
                while d >= 0 {
                    index[d] += 1
                    if index[d] < t.size[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return Tensor(shape: t.size, values: values)
    }

    // MARK: - The pickle subset

    struct Storage {
        var kind: String
        var count: Int
        var elementSize: Int
    }

    struct TensorRef {
        var storageKey: String
        var offset: Int
        var size: [Int]
        var stride: [Int]
    }

    /// A list or dict under construction. Once it is put inside another container it is sealed:
    /// nothing more may be added to it, so its nesting depth is final and a container can never
    /// come to hold itself (a pickle builds each container before nesting it).
    final class ListBox {
        var items: [Value] = []
        var depth = 1
        var sealed = false
    }
    final class DictBox {
        var items: [(Value, Value)] = []
        var depth = 1
        var sealed = false
    }

    indirect enum Value {
        case none, bool(Bool), int(Int), float(Double), string(String), bytes([UInt8])
        /// A tuple and how deeply it nests (1 + its deepest item).
        case tuple([Value], depth: Int)
        case list(ListBox), dict(DictBox)
        /// An allowed callable: `module.name`.
        case global(String, String)
        case storage(String)
        case tensor(TensorRef)
        case mark

        /// How deeply containers nest inside this value (0 for a scalar).
        var depth: Int {
            switch self {
            case .tuple(_, let depth): depth
            case .list(let box): box.depth
            case .dict(let box): box.depth
            default: 0
            }
        }

        /// Marks this value as nested in another container (see `ListBox`).
        func seal() {
            switch self {
            case .list(let box): box.sealed = true
            case .dict(let box): box.sealed = true
            default: break
            }
        }
    }

    /// Limits that no state dict comes near; a file that needs more is refused.
    static let maxStackDepth = 1 << 16
    static let maxMemo = 1 << 20
    static let maxItems = 1 << 22
    /// Containers inside containers: a state dict needs 4 (dict, tensor arguments, size tuple).
    /// Bounded so that nothing recursive (releasing a value) can run out of stack.
    static let maxNesting = 64

    struct Unpickler {
        let bytes: [UInt8]
        var position: Int
        var stack: [Value] = []
        var memo: [Int: Value] = [:]
        var storages: [String: Storage] = [:]
        var itemsMade = 0
        /// The whole file's size: no storage can hold more elements than that.
        let fileSize: Int

        init(bytes: [UInt8], position: Int, fileSize: Int) {
            self.bytes = bytes
            self.position = position
            self.fileSize = fileSize
        }

        mutating func byte() throws -> UInt8 {
            guard position < bytes.count else { throw Failure("truncated pickle") }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, n <= bytes.count - position else { throw Failure("truncated pickle (wants \(n) more bytes)") }
            defer { position += n }
            return bytes[position..<(position + n)]
        }

        mutating func uint(_ n: Int) throws -> Int {
            var value = 0
            for (i, b) in try take(n).enumerated() { value |= Int(b) << (8 * i) }
            return value
        }

        mutating func line() throws -> String {
            guard let end = bytes[position...].prefix(256).firstIndex(of: 0x0A) else { throw Failure("bad GLOBAL name in pickle") }
            defer { position = end + 1 }
            return String(decoding: bytes[position..<end], as: UTF8.self)
        }

        mutating func push(_ v: Value) throws {
            guard stack.count < PyTorchReader.maxStackDepth else { throw Failure("pickle stack too deep") }
            stack.append(v)
        }

        mutating func pop() throws -> Value {
            guard let v = stack.popLast() else { throw Failure("pickle stack underflow") }
            if case .mark = v { throw Failure("pickle: unexpected MARK") }
            return v
        }

        mutating func popToMark() throws -> [Value] {
            guard let i = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else {
                throw Failure("pickle: no MARK")
            }
            let items = Array(stack[(i + 1)...])
            stack.removeSubrange(i...)
            itemsMade += items.count
            guard itemsMade <= PyTorchReader.maxItems else { throw Failure("pickle has too many items") }
            return items
        }

        /// The depth `items` give the container they go into (`container`, when it is a list or
        /// dict: an item that is the container itself would make a cycle); seals them.
        func nest(_ items: [Value], into depth: Int = 1, container: AnyObject? = nil) throws -> Int {
            var deepest = depth
            for item in items {
                if let container {
                    let same: Bool = switch item {
                    case .list(let box): box === container
                    case .dict(let box): box === container
                    default: false
                    }
                    if same { throw Failure("pickle puts a container inside itself: not a state dict") }
                }
                item.seal()
                deepest = max(deepest, item.depth + 1)
            }
            guard deepest <= PyTorchReader.maxNesting else {
                throw Failure("pickle nests containers more than \(PyTorchReader.maxNesting) deep: not a state dict")
            }
            return deepest
        }

        mutating func pushTuple(_ items: [Value]) throws {
            try push(.tuple(items, depth: try nest(items)))
        }

        func list(_ op: String) throws -> ListBox {
            guard case .list(let l) = stack.last else { throw Failure("pickle: \(op) to a non-list") }
            guard !l.sealed else { throw Failure("pickle: \(op) to a list already inside another container") }
            return l
        }

        func dict(_ op: String) throws -> DictBox {
            guard case .dict(let d) = stack.last else { throw Failure("pickle: \(op) on a non-dict") }
            guard !d.sealed else { throw Failure("pickle: \(op) on a dict already inside another container") }
            return d
        }

        mutating func memoize(_ index: Int) throws {
            guard index >= 0, index < PyTorchReader.maxMemo, let top = stack.last else { throw Failure("bad pickle memo") }
            memo[index] = top
        }

        mutating func string(_ n: Int) throws -> String {
            let raw = try take(n)
            guard let s = String(validating: raw, as: UTF8.self) else { throw Failure("pickle string is not UTF-8") }
            return s
        }

        static let allowedGlobals: Set<String> = [
            "torch._utils._rebuild_tensor_v2", "collections.OrderedDict",
            "torch.FloatStorage", "torch.DoubleStorage", "torch.HalfStorage", "torch.BFloat16Storage",
            "torch.LongStorage", "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage",
            "torch.ByteStorage", "torch.BoolStorage",
        ]

        static func elementSize(_ kind: String) -> Int {
            switch kind {
            case "DoubleStorage", "LongStorage": 8
            case "FloatStorage", "IntStorage": 4
            case "HalfStorage", "BFloat16Storage", "ShortStorage": 2
            default: 1
            }
        }

        /// Runs opcodes until STOP; returns the pickled object.
        mutating func load() throws -> Value {
            stack.removeAll()
            memo.removeAll()
            while true {
                let op = try byte()
                switch op {
                case 0x80: _ = try byte()  // PROTO
                case 0x95: _ = try take(8)  // FRAME: a length hint only
                case 0x2E:  // STOP
                    return try pop()
                case 0x28: try push(.mark)  // MARK
                case 0x4E: try push(.none)
                case 0x88: try push(.bool(true))
                case 0x89: try push(.bool(false))
                case 0x4B: try push(.int(try uint(1)))  // BININT1
                case 0x4D: try push(.int(try uint(2)))  // BININT2
                case 0x4A:  // BININT (signed 32-bit)
                    try push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))
                case 0x8A: try push(try long1())  // LONG1
                case 0x47: try push(try binFloat())  // BINFLOAT
                case 0x58: try push(.string(try string(try uint(4))))  // BINUNICODE
                case 0x8C: try push(.string(try string(try uint(1))))  // SHORT_BINUNICODE
                case 0x55: try push(.string(try string(try uint(1))))  // SHORT_BINSTRING
                case 0x54: try push(.string(try string(try uint(4))))  // BINSTRING
                case 0x29: try pushTuple([])  // EMPTY_TUPLE
                case 0x85: try pushTuple([try pop()])  // TUPLE1
                case 0x86:  // TUPLE2
                    let b = try pop(), a = try pop()
                    try pushTuple([a, b])
                case 0x87:  // TUPLE3
                    let c = try pop(), b = try pop(), a = try pop()
                    try pushTuple([a, b, c])
                case 0x74: try pushTuple(try popToMark())  // TUPLE
                case 0x5D: try push(.list(ListBox()))  // EMPTY_LIST
                case 0x7D: try push(.dict(DictBox()))  // EMPTY_DICT
                case 0x61, 0x65: try appendToList(many: op == 0x65)  // APPEND, APPENDS
                case 0x73, 0x75: try setItems(many: op == 0x75)  // SETITEM, SETITEMS
                case 0x71: try memoize(try uint(1))  // BINPUT
                case 0x72: try memoize(try uint(4))  // LONG_BINPUT
                case 0x94: try memoize(memo.count)  // MEMOIZE
                case 0x68, 0x6A:  // BINGET, LONG_BINGET
                    let index = try uint(op == 0x68 ? 1 : 4)
                    guard let v = memo[index] else { throw Failure("pickle refers to memo \(index), which was never stored") }
                    try push(v)
                case 0x63, 0x93: try push(try global(fromStack: op == 0x93))  // GLOBAL, STACK_GLOBAL
                case 0x51:  // BINPERSID
                    try push(try persistent(try pop()))
                case 0x52, 0x81:  // REDUCE, NEWOBJ
                    let args = try pop(), callable = try pop()
                    try push(try call(callable, args))
                case 0x62:  // BUILD: an OrderedDict's attributes (state_dict()._metadata); not needed
                    _ = try pop()
                    guard stack.last != nil else { throw Failure("pickle: BUILD without an object") }
                default:
                    throw Failure(String(format: "pickle opcode 0x%02X at byte %d is not allowed in a state dict", op, position - 1))
                }
            }
        }

        /// LONG1: an n-byte little-endian two's complement integer (longer ones as bytes: only
        /// the legacy format's magic number is).
        mutating func long1() throws -> Value {
            let n = Int(try byte())
            let raw = Array(try take(n))
            guard n <= 8 else { return .bytes(raw) }
            var value: Int64 = 0
            for (i, b) in raw.enumerated() { value |= Int64(b) << (8 * Int64(i)) }
            if n > 0, n < 8, raw[n - 1] & 0x80 != 0 { value -= Int64(1) << (8 * Int64(n)) }
            return .int(Int(value))
        }

        /// BINFLOAT: a big-endian double.
        mutating func binFloat() throws -> Value {
            var bits: UInt64 = 0
            for b in try take(8) { bits = bits << 8 | UInt64(b) }
            return .float(Double(bitPattern: bits))
        }

        /// APPEND (one value) or APPENDS (the values down to the mark) onto the list below them.
        mutating func appendToList(many: Bool) throws {
            let items = many ? try popToMark() : [try pop()]
            let l = try list(many ? "APPENDS" : "APPEND")
            l.depth = try nest(items, into: l.depth, container: l)
            l.items += items
        }

        /// SETITEM (one key and value) or SETITEMS (pairs down to the mark) into the dict below them.
        mutating func setItems(many: Bool) throws {
            var items: [Value]
            if many {
                items = try popToMark()
                guard items.count % 2 == 0 else { throw Failure("pickle: bad SETITEMS") }
            } else {
                let v = try pop(), k = try pop()
                items = [k, v]
            }
            let d = try dict(many ? "SETITEMS" : "SETITEM")
            d.depth = try nest(items, into: d.depth, container: d)
            for i in stride(from: 0, to: items.count, by: 2) { d.items.append((items[i], items[i + 1])) }
        }

        /// GLOBAL ("module\nname\n" inline) or STACK_GLOBAL (module and name on the stack): only
        /// the callables a state dict needs (`allowedGlobals`); anything else may try to run code.
        mutating func global(fromStack: Bool) throws -> Value {
            if fromStack {
                guard case .string(let name) = try pop(), case .string(let module) = try pop(),
                      Self.allowedGlobals.contains(module + "." + name) else {
                    throw Failure("refusing a callable this reader does not allow: a state dict needs only tensors")
                }
                return .global(module, name)
            }
            let module = try line(), name = try line()
            guard Self.allowedGlobals.contains(module + "." + name) else {
                throw Failure("refusing to load \(module).\(name): a state dict needs only tensors (this file may try to run code)")
            }
            return .global(module, name)
        }

        /// ('storage', StorageType, key, location, numel[, view metadata])
        mutating func persistent(_ pid: Value) throws -> Value {
            // A storage cannot hold more elements than the file has bytes: this bounds every
            // size computed from `count` below.
            guard case .tuple(let t, _) = pid, t.count >= 5, case .string("storage") = t[0],
                  case .global("torch", let kind) = t[1], case .string(let key) = t[2], case .int(let count) = t[4],
                  count >= 0, count <= fileSize else {
                throw Failure("pickle: unexpected persistent id (not a PyTorch storage)")
            }
            if let known = storages[key] {
                guard known.kind == kind, known.count == count else { throw Failure("storage \(key) is described twice, differently") }
            } else {
                storages[key] = Storage(kind: kind, count: count, elementSize: Self.elementSize(kind))
            }
            return .storage(key)
        }

        func ints(_ v: Value) throws -> [Int] {
            guard case .tuple(let items, _) = v else { throw Failure("pickle: a tensor size or stride is not a tuple") }
            return try items.map { item in
                guard case .int(let i) = item else { throw Failure("pickle: a tensor size or stride is not an integer") }
                return i
            }
        }

        func call(_ callable: Value, _ args: Value) throws -> Value {
            guard case .global(let module, let name) = callable, case .tuple(let a, _) = args else {
                throw Failure("pickle calls something that is not an allowed callable")
            }
            switch (module, name) {
            case ("collections", "OrderedDict"):
                guard a.isEmpty else { throw Failure("pickle: OrderedDict with arguments") }
                return .dict(DictBox())
            case ("torch._utils", "_rebuild_tensor_v2"):
                guard a.count >= 4, case .storage(let key) = a[0], case .int(let offset) = a[1] else {
                    throw Failure("pickle: a tensor with unexpected arguments")
                }
                return .tensor(TensorRef(storageKey: key, offset: offset, size: try ints(a[2]), stride: try ints(a[3])))
            default:
                throw Failure("pickle calls \(module).\(name), which a state dict does not need")
            }
        }
    }
}
